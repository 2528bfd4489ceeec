"""Stage `evaluate_baseline@<name>`: what the probe gets without distillation: log-mel
features (``fbank``) or the teacher's architecture untrained (``random_teacher``)."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import ConfigError
from pipeline.core.io import write_json
from pipeline.corpus.manifest import read_manifest
from pipeline.evaluation.scoring import BASELINES, EvaluateConfig, probe_data, score_upstreams
from pipeline.evaluation.upstream import Upstream, fbank_layers
from pipeline.nn.frames import HUBERT_FRAMES
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.sources import untrained_teacher


def run(cfg: EvaluateConfig, name: str, teacher: TeacherConfig, manifest: Path, out: Path) -> dict:
    """Score baseline ``name``; write its metrics to ``out`` (a JSON file)."""
    if name not in BASELINES:
        raise ConfigError(f"evaluate.baselines: unknown baseline {name!r}; choose from {BASELINES}")
    data = probe_data(cfg, read_manifest(manifest))
    if name == "fbank":
        upstream = Upstream("fbank", "baseline", fbank_layers(HUBERT_FRAMES), None)
    else:
        model = untrained_teacher(teacher)
        upstream = Upstream(name, "baseline", model.hidden_states, model)
    metrics = score_upstreams({None: upstream}, cfg, data, manifest)
    write_json(out, metrics)
    return metrics
