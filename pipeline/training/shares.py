"""A run's training seeds shared out to processes, and their outputs merged back.

The seeds of a run are independent (each its own initial weights, dropout and batch order),
so they can train in separate processes: on a CPU, processes of one thread each train small
students 1.7x to 1.9x as fast on 2 cores as one process of 2 threads, whose small kernels gain
little from a second thread (``bench/seed_cost.py``). Each share holds whole seeds, every model
of a seed (one architecture's students, a sweep's grid), so a seed's batches are still read
once for all its models. The merged outputs are those one process writes: each student's
checkpoint with its seeds in their declared order, and one training log.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path

from pipeline.students import StudentConfig
from pipeline.students.checkpoint import CHECKPOINT, merge_checkpoints
from pipeline.training.config import TrainConfig
from pipeline.training.live import TrainingLog, read_curve

Labels = dict[tuple[str, int], str]  # (student, seed) -> its label in the training log


def per_process(cfg: TrainConfig) -> TrainConfig:
    """The settings each process of a run trains with: its share of the threads, however many
    seeds the run has, so that a seed's weights do not depend on the seeds beside it (one
    process under ``torchrun``, whose ranks each take all the threads)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return cfg
    return dataclasses.replace(cfg, threads=max(1, cfg.threads // cfg.processes), processes=1)


def seed_shares(labels: Labels, processes: int) -> list[Labels]:
    """The models of ``labels`` in up to ``processes`` shares of whole training seeds, dealt in
    turn; one share for one seed, or under ``torchrun`` (whose ranks split the data instead)."""
    seeds = sorted({seed for _, seed in labels})
    count = min(processes, len(seeds))
    if count <= 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return [labels]
    mine = [set(seeds[i::count]) for i in range(count)]
    return [{key: label for key, label in labels.items() if key[1] in share} for share in mine]


def share_students(students: dict[str, StudentConfig], share: Labels) -> dict[str, StudentConfig]:
    """The students of ``share``, each with its seeds in the share only."""
    return {name: dataclasses.replace(student, seeds=tuple(s for n, s in share if n == name))
            for name, student in students.items() if any(n == name for n, _ in share)}  # fmt: skip


def merge_shares(
    students: dict[str, StudentConfig],
    cfg: TrainConfig,
    parts: list[tuple[Labels, Path, dict]],
    out_dirs: dict[str, Path],
    log_dir: Path | None,
    seconds: float,
) -> dict[str, dict]:
    """The outputs of the shares ``(labels, folder, results)`` (each student's checkpoint in
    ``folder/<name>``, the training log in ``folder/log``) merged into those one process
    writes: each student's checkpoint in ``out_dirs``, the training log in ``log_dir``; returns
    each student's figures, with the run's (``seconds`` of wall time, summed throughput)."""
    summary = {
        "steps": cfg.steps,
        "resumed_from_step": min(r[n]["resumed_from_step"] for _, _, r in parts for n in r),
        "seconds": round(seconds, 2),
        "frames_per_second": round(
            sum(next(iter(r.values()))["frames_per_second"] for _, _, r in parts), 1
        ),  # fmt: skip
    }
    results = {}
    for name, student in students.items():
        seeds = student.training_seeds(cfg.seed)
        mine = [(folder, r[name]) for _, folder, r in parts if name in r]
        out_dirs[name].mkdir(parents=True, exist_ok=True)
        merge_checkpoints([folder / name / CHECKPOINT for folder, _ in mine],
                          out_dirs[name] / CHECKPOINT, seeds)  # fmt: skip
        first = next(r for _, r in mine if seeds[0] in r["seeds"])
        results[name] = {"parameters": first["parameters"], "seeds": list(seeds), **summary,
                         "final": first["final"]}  # fmt: skip
    if log_dir is not None:
        _merge_logs(log_dir, parts, results, summary)
    return results


def _merge_logs(log_dir: Path, parts: list[tuple[Labels, Path, dict]], results: dict,
                summary: dict) -> None:  # fmt: skip
    """One training log of every share's points, logged step by step as one run logs them."""
    labels = {key: label for share, _, _ in parts for key, label in share.items()}
    log = TrainingLog(log_dir, labels)
    points = sorted(((p["step"], label, p) for share, folder, _ in parts
                     for label in share.values() for p in read_curve(folder / "log", label)),
                    key=lambda item: item[0])  # fmt: skip
    for _, group in itertools.groupby(points, key=lambda item: item[0]):
        for _, label, point in group:
            log.log(label, point)
        log.flush()
    log.finish({key: {"parameters": results[key[0]]["parameters"]} for key in labels}, summary)
