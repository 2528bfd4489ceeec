"""Stage `train`: train one student from the teacher cache (the teacher never runs here)."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pipeline.audio.frames import FrameSpec
from pipeline.core.config import to_dict
from pipeline.core.io import output_lock, write_json
from pipeline.corpus.manifest import read_manifest
from pipeline.losses import LOSSES
from pipeline.students import StudentConfig
from pipeline.students.checkpoint import build_student, save_student
from pipeline.training.loop import StudentRun, TrainConfig, train
from pipeline.training.stream import CacheBatches
from storage import CacheFormatError, open_cache
from storage.base import read_frontend

log = logging.getLogger(__name__)

CHECKPOINT = "model.pt"
METRICS = "metrics.json"
CURVE = "curve.json"
STATE = "train_state.pt"


def run(
    students: dict[str, StudentConfig],
    train_cfg: TrainConfig,
    manifest: Path,
    cache: Path,
    out_dirs: dict[str, Path],
    state_path: Path,
) -> dict[str, dict]:
    """Train students on the train split, side by side on the same batches (each batch read and
    decoded once), from the cache only; write each one's checkpoint, metrics and curve.

    One student is `train-student`; several are a sweep. Each is initialised and draws dropout
    exactly as it would alone, so a sweep gives the students separate runs give. A checkpoint at
    ``state_path`` every ``train.checkpoint_every`` steps lets a killed run resume exactly; one
    made for other settings is discarded.

    Only one run trains into ``state_path`` at a time (a lock beside it).

    Raises:
        CacheFormatError: the cache is incomplete, damaged (named), of another schema or teacher,
            or does not match the audio.
        OutputError: another run trains into the same place.
    """
    with output_lock(state_path):
        return _train(students, train_cfg, manifest, cache, out_dirs, state_path)


def _train(students, train_cfg, manifest, cache, out_dirs, state_path) -> dict[str, dict]:
    torch.set_num_threads(train_cfg.threads)
    header = open_cache(cache).header
    if not header.fingerprint.startswith(train_cfg.expect_teacher):
        raise CacheFormatError(
            f"{cache}: teacher fingerprint {header.fingerprint[:16]}... ({header.teacher}) is not "
            f"the expected {train_cfg.expect_teacher!r} (train.expect_teacher); rerun "
            "cache-teacher with the expected teacher, or update train.expect_teacher"
        )
    frames = FrameSpec(tuple(header.frame_kernels), tuple(header.frame_strides))
    teacher_frontend = read_frontend(cache)
    utts = read_manifest(manifest, split="train")
    if not utts:
        raise ValueError(f"{manifest}: no utterances in the train split")
    dataset = CacheBatches(
        cache, utts, manifest, batch_seconds=train_cfg.batch_seconds, seed=train_cfg.seed,
        shuffle=True, pool=train_cfg.shuffle_pool,
    )  # fmt: skip

    def epochs(epoch: int, skip: int):
        workers = train_cfg.loader_workers
        dataset.set_epoch(epoch, skip if workers == 0 else 0)  # cheap skip without workers
        loader = DataLoader(dataset, batch_size=None, num_workers=workers)
        return loader if workers == 0 else itertools.islice(loader, skip, None)

    runs = []
    for name, cfg in students.items():
        torch.manual_seed(train_cfg.seed)  # every student starts as it would alone
        dims = {f: spec["dim"] for f, spec in header.features.items()}
        model = build_student(cfg, header.num_classes, frames, teacher_frontend, dims)
        losses = {n: LOSSES[n](c) for n, c in cfg.losses.items()}
        params = sum(p.numel() for p in model.parameters())
        log.info(
            "student %s: %s, %.2fM parameters, losses %s",
            name,
            cfg.arch,
            params / 1e6,
            list(losses),
        )
        runs.append(StudentRun(name, model, losses, train_cfg))
    identity = {
        "students": {
            n: {
                "arch": c.arch,
                "model": to_dict(c.model),
                "losses": {k: to_dict(v) for k, v in c.losses.items()},
            }
            for n, c in students.items()
        },
        "train": to_dict(train_cfg),
        "cache": header.fingerprint,
        "codec": header.codec,
        "cache_files": hashlib.sha256(
            json.dumps(header.checksums, sort_keys=True).encode()
        ).hexdigest(),
        "corpus": header.corpus,
    }
    description = (
        f"train {', '.join(students)}" if len(students) < 4 else f"sweep of {len(students)}"
    )
    summary = train(runs, epochs, train_cfg, state_path, identity=identity, description=description)

    results = {}
    for run in runs:
        out = out_dirs[run.name]
        out.mkdir(parents=True, exist_ok=True)
        provenance = {
            "name": run.name,
            "cache_fingerprint": header.fingerprint,
            "train": to_dict(train_cfg),
        }
        save_student(out / CHECKPOINT, run.model, students[run.name], frames, provenance)
        final = {k: v for k, v in run.curve[-1].items() if k not in ("step", "lr")}
        params = sum(p.numel() for p in run.model.parameters())
        results[run.name] = {"parameters": params, **summary, "final": final}
        write_json(out / CURVE, run.curve)
        write_json(out / METRICS, results[run.name])
    state_path.unlink(missing_ok=True)
    return results
