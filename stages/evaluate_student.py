"""Stage `evaluate_student@<name>`: each training seed of a trained student in the probes, its
agreement with the cached teacher on each scored split, and the student's efficiency."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import CacheFormatError
from pipeline.core.io import write_json
from pipeline.corpus.manifest import read_manifest
from pipeline.evaluation.agreement import teacher_agreement
from pipeline.evaluation.scoring import EvaluateConfig, probe_splits, score_upstreams
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
        CacheFormatError: the student was trained on another teacher's cache.
    """
    models, ckpt = load_students(checkpoint)
    header = read_header(cache)
    if ckpt.get("cache_fingerprint") != header.fingerprint:
        raise CacheFormatError(f"{checkpoint}: student {name!r} was trained on another teacher's "
                               f"cache than {cache}; retrain it")  # fmt: skip
    splits, refs = probe_splits(cfg, read_manifest(manifest))
    metrics = score_upstreams(student_upstreams(name, models), cfg, splits, refs, manifest)
    first = next(iter(models.values()))
    if first.predicts_logits:  # feature-distillation students have no cluster logits
        for split, scores in metrics["splits"].items():
            batches = CacheBatches(cache, splits[split], manifest, batch_seconds=cfg.batch_seconds,
                                   seed=0, shuffle=False, pool=0)  # fmt: skip
            per_seed = [teacher_agreement(model, batches) for model in models.values()]
            for key in per_seed[0]:
                if key != "frames":
                    values = [round(a[key], 6) for a in per_seed]
                    scores[key] = {"mean": round(sum(values) / len(values), 6), "seeds": values}
    metrics["seeds"] = list(models)
    metrics["stream_latency_ms"] = streaming_info(first).get("latency_ms")  # None: it cannot
    write_json(out, metrics)
    return metrics
