"""Stage `evaluate`: score every student against the teacher on a held-out split."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.agreement import teacher_agreement
from pipeline.data import CacheBatches
from pipeline.io import write_json
from pipeline.manifest import SPLITS, read_manifest
from pipeline.students.checkpoint import load_student
from storage import CacheFormatError, open_cache

log = logging.getLogger(__name__)

METRICS = "metrics.json"


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` section of params.yaml.

    Attributes:
        split: held-out split to score (``dev`` or ``test``).
        batch_seconds: audio per inference batch.
        threads: torch intra-op threads.
    """

    split: str
    batch_seconds: float
    threads: int

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")


def run(
    cfg: EvaluateConfig, manifest: Path, cache: Path, students: dict[str, Path], out_dir: Path
) -> dict:
    """Write ``out_dir/metrics.json``: per student, top-1 agreement, KL and DKD parts.

    Args:
        students: student name -> checkpoint file.

    Raises:
        CacheFormatError: a student trained on another teacher than the cache's.
    """
    torch.set_num_threads(cfg.threads)
    reader = open_cache(cache)
    utts = read_manifest(manifest, split=cfg.split)
    if not utts:
        raise ValueError(f"{manifest}: no utterances in the {cfg.split} split")
    batches = CacheBatches(
        cache, utts, manifest, batch_seconds=cfg.batch_seconds, seed=0, shuffle=False, pool=0
    )
    results = {}
    missing = [f"{p} ({n})" for n, p in students.items() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"student checkpoints not found: {', '.join(missing)}; run train-student first"
        )
    for name, checkpoint in students.items():
        model, ckpt = load_student(checkpoint)
        if ckpt["cache_fingerprint"] != reader.header.fingerprint:
            raise CacheFormatError(
                f"{checkpoint}: student {name!r} was trained on another teacher's cache"
            )
        results[name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            **teacher_agreement(model, batches),
        }
        log.info("%s: %s", name, results[name])
    metrics = {"split": cfg.split, "teacher": reader.header.teacher, "students": results}
    write_json(out_dir / METRICS, metrics)
    return metrics
