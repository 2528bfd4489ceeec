"""Stage two's pieces: the cache's data streams, the students' runs, their outputs."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pipeline.core.config import to_dict
from pipeline.core.errors import CacheFormatError
from pipeline.corpus.manifest import Utterance, corpus_fingerprint, read_manifest
from pipeline.losses import LOSSES
from pipeline.nn.frames import FrameSpec
from pipeline.students import StudentConfig
from pipeline.students.checkpoint import CHECKPOINT, build_student, save_student
from pipeline.training import distributed
from pipeline.training.batches import Batch, teacher_decoder
from pipeline.training.cache_batches import CacheBatches
from pipeline.training.config import TrainConfig
from pipeline.training.epochs import EpochStream, StreamSet
from pipeline.training.live import TrainingLog
from pipeline.training.trainee import Trainee
from storage import CacheHeader, open_cache

log = logging.getLogger(__name__)


def check_teacher(header: CacheHeader, cfg: TrainConfig, cache: str | Path) -> None:
    """Refuse a cache whose teacher is not ``train.expect_teacher``."""
    if not header.fingerprint.startswith(cfg.expect_teacher):
        raise CacheFormatError(
            f"{cache}: teacher fingerprint {header.fingerprint[:16]}... ({header.teacher}) is not "
            f"the expected {cfg.expect_teacher!r} (train.expect_teacher); rerun "
            "cache-teacher with the expected teacher, or update train.expect_teacher"
        )


def cache_streams(
    cache: str | Path, utts: list[Utterance], manifest: Path, cfg: TrainConfig, seed: int
) -> StreamSet:
    """This rank's share of ``cfg.streams`` streams over the cache's train utterances in the
    batch order of training seed ``seed``, each giving micro-batches of ``batch_seconds /
    streams``."""

    def make(k: int) -> EpochStream:
        dataset = CacheBatches(
            cache, utts, manifest, batch_seconds=cfg.batch_seconds / cfg.streams, seed=seed,
            shuffle=True, pool=cfg.shuffle_pool, stream=k, streams=cfg.streams,
        )  # fmt: skip

        def epoch(e: int, skip: int):
            workers = cfg.loader_workers
            dataset.set_epoch(e, skip if workers == 0 else 0)  # cheap skip without workers
            loader = DataLoader(dataset, batch_size=None, num_workers=workers,
                                pin_memory=cfg.device.startswith("cuda"))  # fmt: skip
            return loader if workers == 0 else itertools.islice(loader, skip, None)

        return EpochStream(epoch)

    return StreamSet(cfg.streams, make)


def training_data(
    cache: str | Path, manifest: Path, cfg: TrainConfig, device: torch.device, labels: dict
) -> tuple[CacheHeader, list[Utterance], dict[int, StreamSet], Callable[[Batch], Batch]]:
    """The cache's header (its teacher checked), the manifest's train rows, this rank's streams
    over them in the batch order of each training seed of the runs ``labels`` names
    (:func:`run_labels`), and what makes their batches trainable (moved to ``device``, teacher
    logits decoded there).

    Raises:
        CacheFormatError: another teacher than ``train.expect_teacher``.
        ValueError: no train utterances.
    """
    reader = open_cache(cache)
    check_teacher(reader.header, cfg, cache)
    utts = read_manifest(manifest, split="train")
    if not utts:
        raise ValueError(f"{manifest}: no utterances in the train split")
    decode = teacher_decoder(reader.codec, reader.header.argmax_targets, device)
    seeds = sorted({seed for _, seed in labels})
    streams = {seed: cache_streams(cache, utts, manifest, cfg, seed) for seed in seeds}
    return reader.header, utts, streams, decode


def run_labels(students: dict[str, StudentConfig], cfg: TrainConfig, sweep: bool) -> dict:
    """``(student, seed) -> label`` of each model a run trains, as its training log names it:
    by student in a sweep, by seed where a student has several (``dkd_b1/seed3``, ``seed3``),
    or "" for the one model of a one-seed student."""
    labels = {}
    for name, student in students.items():
        seeds = student.training_seeds(cfg.seed)
        for seed in seeds:
            parts = ([name] if sweep else []) + ([f"seed{seed}"] if len(seeds) > 1 else [])
            labels[name, seed] = "/".join(parts)
    return labels


def describe(labels: dict[tuple[str, int], str]) -> str:
    """The progress bar's title of a run over the models of ``labels``."""
    names = list(dict.fromkeys(name for name, _ in labels))
    about = ", ".join(names) if len(names) < 4 else f"a sweep of {len(names)}"
    return f"train {about}" + (f" ({len(labels)} models)" if len(labels) > len(names) else "")


def student_runs(
    students: dict[str, StudentConfig],
    header: CacheHeader,
    teacher_frontend,
    cfg: TrainConfig,
    device: torch.device,
    labels: dict[tuple[str, int], str],
    training_log: TrainingLog | None = None,
) -> list[Trainee]:
    """One run per student and training seed (``labels``' keys), each initialised and drawing
    dropout exactly as it would alone, logging its curve to ``training_log`` (rank 0's) under
    its label."""
    frames = FrameSpec(tuple(header.frame_kernels), tuple(header.frame_strides))
    dims = {f: spec["dim"] for f, spec in header.features.items()}
    runs = []
    for (name, seed), label in labels.items():
        student = students[name]
        torch.manual_seed(seed)
        model = build_student(student, header.num_classes, frames, teacher_frontend, dims)
        model = model.to(device)  # before the average copies it
        losses = {n: LOSSES[n](c) for n, c in student.losses.items()}
        params = sum(p.numel() for p in model.parameters())
        log.info("student %s (seed %d): %s, %.2fM parameters, losses %s", name, seed,
                 student.arch, params / 1e6, list(losses))  # fmt: skip
        on_point = None if training_log is None else partial(_log_point, training_log, label)
        average = cfg.average.build().attach(model, cfg.steps)
        runs.append(Trainee(name, model, losses, cfg, device, cfg.distill_warmup_steps, on_point,
                            seed=seed, average=average))  # fmt: skip
    return runs


def forget(state_path: Path) -> None:
    """Start afresh: rank 0 deletes the checkpoint, and no rank goes on before it is gone."""
    if distributed.is_main():
        state_path.unlink(missing_ok=True)
    distributed.barrier()


def training_log(log_dir: Path | None, labels: dict[tuple[str, int], str]) -> TrainingLog | None:
    """The run's training log in ``log_dir`` (rank 0 writes it), its models under ``labels``;
    None without a folder."""
    if log_dir is None or not distributed.is_main():
        return None
    return TrainingLog(log_dir, labels)


def _log_point(training_log: TrainingLog, name: str, point: dict) -> None:
    training_log.log(name, point)
    training_log.flush()


def identity(
    students: dict[str, StudentConfig], cfg: TrainConfig, header: CacheHeader, utts: list[Utterance]
) -> dict:
    """What a training checkpoint must have been made for to be resumed: what its weights
    depend on (students, the training settings but the operational ones, the cache's content,
    the manifest's train rows ``utts``, not their paths), never where or how it runs."""
    return {
        "train_utterances": corpus_fingerprint(utts),
        "students": {n: to_dict(c) for n, c in students.items()},
        "train": cfg.result_settings(),
        "cache": header.fingerprint,
        "codec": header.codec,
        "parts": hashlib.sha256(
            json.dumps(header.to_json()["parts"], sort_keys=True).encode()
        ).hexdigest(),
        "corpus": header.corpus,
    }


BATCH_ORDER = ("batch_seconds", "shuffle_pool", "streams", "loader_workers")  # train settings


def pairing(
    student: StudentConfig, cfg: TrainConfig, header: CacheHeader, utts: list[Utterance]
) -> str:
    """What a training seed of ``student`` fixes, as a fingerprint: its architecture (and so,
    with the seed, its initial weights and dropout) and its batch order (the cache, the train
    rows, the batching settings :data:`BATCH_ORDER`). Two students with the same fingerprint
    trained with seed ``k`` start alike and see the same batches: their comparison is paired
    by seed (:mod:`pipeline.evaluation.compare`)."""
    settings = cfg.result_settings()
    about = {
        "arch": student.arch,
        "model": to_dict(student.model),
        "batch_order": {k: settings[k] for k in BATCH_ORDER},
        "cache": header.fingerprint,
        "train_utterances": corpus_fingerprint(utts),
    }
    return hashlib.sha256(json.dumps(about, sort_keys=True).encode()).hexdigest()[:16]


def save_outputs(
    runs: list[Trainee],
    students: dict[str, StudentConfig],
    header: CacheHeader | None,
    cfg: TrainConfig,
    summary: dict,
    out_dirs: dict[str, Path],
    training_log: TrainingLog | None,
    utts: list[Utterance] = (),
) -> dict[str, dict]:
    """Each student's checkpoint (every training seed's weights, and its :func:`pairing` for
    the train rows ``utts``), and the run's figures in its training log (if any); returns each
    student's figures (parameters, final loss terms of its first seed) and the run's (time,
    throughput)."""
    results = {}
    for name, student in students.items():
        mine = [run for run in runs if run.name == name]
        out = out_dirs[name]
        out.mkdir(parents=True, exist_ok=True)
        provenance = {"name": name, "cache_fingerprint": header.fingerprint,
                      "teacher_class": header.teacher_class, "train": to_dict(cfg),
                      "pairing": pairing(student, cfg, header, list(utts))}  # fmt: skip
        save_student(out / CHECKPOINT, {run.seed: run.final_model for run in mine}, student,
                     provenance)  # fmt: skip
        final = {k: v for k, v in mine[0].curve[-1].items() if k not in ("step", "lr")}
        size = sum(p.numel() for p in mine[0].model.parameters())
        seeds = [run.seed for run in mine]
        results[name] = {"parameters": size, "seeds": seeds, **summary, "final": final}
    if training_log is not None:
        figures = {(r.name, r.seed): {"parameters": results[r.name]["parameters"]} for r in runs}
        training_log.finish(figures, summary)
    return results
