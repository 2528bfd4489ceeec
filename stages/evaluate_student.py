"""Stage `evaluate_student@<name>`: each training seed of a trained student in the probes, its
agreement with the cached teacher on each scored split, and the student's efficiency."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import CacheFormatError
from pipeline.core.io import write_json
from pipeline.corpus.manifest import read_manifest
from pipeline.evaluation.agreement import seeds_agreement
from pipeline.evaluation.scoring import EvaluateConfig, probe_data, score_upstreams
from pipeline.evaluation.upstream import student_upstreams
from pipeline.export.streaming import streaming_info
from pipeline.students.checkpoint import load_students
from pipeline.training.cache_batches import CacheBatches
from storage import read_header


def run(
    cfg: EvaluateConfig, name: str, checkpoint: Path, manifest: Path, cache: str | Path, out: Path
) -> dict:
    """Score student ``name`` (every training seed of its checkpoint); write its metrics to
    ``out`` (a JSON file).

    Raises:
        CacheFormatError: the student was trained on another teacher's cache (another class of
            teacher: both named).
    """
    models, ckpt = load_students(checkpoint)
    header = read_header(cache)
    trained_on = ckpt.get("teacher_class", "hubert")  # checkpoints before the field: HuBERT's
    if trained_on != header.teacher_class:
        raise CacheFormatError(f"{checkpoint}: student {name!r} was trained on a {trained_on} "
                               f"teacher's cache, {cache} is a {header.teacher_class} teacher's; "
                               "retrain it")  # fmt: skip
    if ckpt.get("cache_fingerprint") != header.fingerprint:
        raise CacheFormatError(f"{checkpoint}: student {name!r} was trained on another teacher's "
                               f"cache than {cache}; retrain it")  # fmt: skip
    data = probe_data(cfg, read_manifest(manifest))
    metrics = score_upstreams(student_upstreams(name, models), cfg, data, manifest)
    first = next(iter(models.values()))
    if first.predicts_logits:  # feature-distillation students have no cluster logits
        for split, scores in metrics["splits"].items():
            batches = CacheBatches(cache, data.splits[split], manifest, seed=0, shuffle=False,
                                   batch_seconds=cfg.batch_seconds, pool=0)  # fmt: skip
            scores.update(seeds_agreement(list(models.values()), batches))
    metrics["seeds"] = list(models)
    metrics["pairing"] = ckpt.get("pairing", "")  # same-seed replicates of two students pair
    metrics["stream_latency_ms"] = streaming_info(first).get("latency_ms")  # None: it cannot
    write_json(out, metrics)
    return metrics
