"""Stage `evaluate_teacher`: the teacher's frozen layers in the ASR probe, and its efficiency."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.io import write_json
from pipeline.corpus.manifest import read_manifest
from pipeline.evaluation.scoring import EvaluateConfig, probe_data, score_upstreams
from pipeline.evaluation.upstream import Upstream
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.sources import build_teacher


def run(cfg: EvaluateConfig, teacher: TeacherConfig, manifest: Path, out: Path) -> dict:
    """Score the configured teacher; write its metrics to ``out`` (a JSON file)."""
    data = probe_data(cfg, read_manifest(manifest))
    model = build_teacher(teacher, with_kmeans=False)
    upstream = Upstream("teacher", "teacher", model.hidden_states, model)
    metrics = score_upstreams({None: upstream}, cfg, data, manifest)
    metrics["description"] = model.description
    write_json(out, metrics)
    return metrics
