"""Stage `train`: train one student from the teacher cache (the teacher never runs here)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pipeline.config import to_dict
from pipeline.data import Batch, CacheBatches
from pipeline.frames import FrameSpec
from pipeline.io import write_json
from pipeline.losses import LOSSES
from pipeline.manifest import read_manifest
from pipeline.students import StudentConfig
from pipeline.students.checkpoint import build_student, save_student
from pipeline.trainer import TrainConfig, train
from storage import CacheFormatError, open_cache

log = logging.getLogger(__name__)

CHECKPOINT = "model.pt"
METRICS = "metrics.json"
CURVE = "curve.json"


def endless(dataset: CacheBatches, workers: int) -> Iterator[Batch]:
    """Stream ``dataset`` forever, reshuffled each epoch."""
    for epoch in itertools.count():
        dataset.set_epoch(epoch)
        yield from DataLoader(dataset, batch_size=None, num_workers=workers)


def run(
    name: str,
    train_cfg: TrainConfig,
    student_cfg: StudentConfig,
    manifest: Path,
    cache: Path,
    out_dir: Path,
) -> dict:
    """Train student ``name`` on the train split; write checkpoint, metrics, curve to ``out_dir``.

    Raises:
        CacheFormatError: the cache is incomplete, of another schema, or does not match the audio.
    """
    torch.set_num_threads(train_cfg.threads)
    torch.manual_seed(train_cfg.seed)
    reader = open_cache(cache)
    header = reader.header
    if not header.fingerprint.startswith(train_cfg.expect_teacher):
        raise CacheFormatError(
            f"{cache}: teacher fingerprint {header.fingerprint[:16]}... ({header.teacher}) is not "
            f"the expected {train_cfg.expect_teacher!r} (train.expect_teacher); rerun "
            "cache-teacher with the expected teacher, or update train.expect_teacher"
        )
    frames = FrameSpec(tuple(header.frame_kernels), tuple(header.frame_strides))
    utts = read_manifest(manifest, split="train")
    if not utts:
        raise ValueError(f"{manifest}: no utterances in the train split")
    dataset = CacheBatches(
        cache, utts, manifest, batch_seconds=train_cfg.batch_seconds, seed=train_cfg.seed,
        shuffle=True, pool=train_cfg.shuffle_pool,
    )  # fmt: skip

    model = build_student(student_cfg, header.num_classes, frames)
    losses = {n: LOSSES[n](c) for n, c in student_cfg.losses.items()}
    params = sum(p.numel() for p in model.parameters())
    log.info(
        "student %s: %s, %.2fM parameters, losses %s",
        name,
        student_cfg.arch,
        params / 1e6,
        list(losses),
    )
    curve, summary = train(
        model,
        losses,
        endless(dataset, train_cfg.loader_workers),
        train_cfg,
        description=f"train {name}",
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = {
        "name": name,
        "cache_fingerprint": header.fingerprint,
        "train": to_dict(train_cfg),
    }
    save_student(out_dir / CHECKPOINT, model, student_cfg, frames, provenance)
    metrics = {"parameters": params, **summary}
    write_json(out_dir / CURVE, curve)
    write_json(out_dir / METRICS, metrics)
    return metrics
