"""Stage `evaluate_student@<name>`: a trained student in the ASR probe, its agreement with the
cached teacher on each scored split, and its efficiency."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import CacheFormatError
from pipeline.core.io import write_json
from pipeline.corpus.manifest import read_manifest
from pipeline.evaluation.agreement import teacher_agreement
from pipeline.evaluation.scoring import EvaluateConfig, probe_splits, score_upstream
from pipeline.evaluation.upstream import Upstream
from pipeline.export.streaming import streaming_info
from pipeline.students.checkpoint import load_student
from pipeline.training.cache_batches import CacheBatches
from storage import read_header


def run(
    cfg: EvaluateConfig, name: str, checkpoint: Path, manifest: Path, cache: str | Path, out: Path
) -> dict:
    """Score student ``name`` from its checkpoint; write its metrics to ``out`` (a JSON file).

    Raises:
        CacheFormatError: the student was trained on another teacher's cache.
    """
    model, ckpt = load_student(checkpoint)
    header = read_header(cache)
    if ckpt.get("cache_fingerprint") != header.fingerprint:
        raise CacheFormatError(f"{checkpoint}: student {name!r} was trained on another teacher's "
                               f"cache than {cache}; retrain it")  # fmt: skip
    splits = probe_splits(cfg, read_manifest(manifest))
    upstream = Upstream(name, "student", model.extract_features, model)
    metrics = score_upstream(upstream, cfg, splits, manifest, out)
    if model.predicts_logits:  # feature-distillation students have no cluster logits
        for split, scores in metrics["splits"].items():
            batches = CacheBatches(cache, splits[split], manifest, batch_seconds=cfg.batch_seconds,
                                   seed=0, shuffle=False, pool=0)  # fmt: skip
            scores.update(teacher_agreement(model, batches))
    metrics["stream_latency_ms"] = streaming_info(model).get("latency_ms")  # None: it cannot
    write_json(out, metrics)
    return metrics
