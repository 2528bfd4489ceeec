"""Stage `train`: train students from the teacher cache (the teacher never runs here)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from pipeline.students import StudentConfig
from pipeline.training import distributed
from pipeline.training.config import TrainConfig
from pipeline.training.loop import train
from pipeline.training.shares import merge_shares, per_process, seed_shares, share_students
from pipeline.training.students import (
    describe,
    forget,
    identity,
    run_labels,
    save_outputs,
    student_runs,
    training_data,
    training_log,
)
from storage import read_frontend

STATE = "train_state.pt"


def run(
    students: dict[str, StudentConfig],
    train_cfg: TrainConfig,
    manifest: Path,
    cache: str | Path,
    out_dirs: dict[str, Path],
    state_path: Path,
    log_dir: Path | None = None,
    sweep: bool = False,
    restart: bool = False,
) -> dict[str, dict]:
    """Train students, each with each of its training seeds, on the train split, side by side,
    from the cache only; write each student's checkpoint (every seed's weights) into
    ``out_dirs[name]``, the run's curves and figures into the dvclive folder ``log_dir`` if
    given (by student name for a ``sweep``, by seed for a student with several).

    A training seed fixes a model's initial weights, dropout and batch order, exactly as alone:
    the models of one seed (one architecture's students, a sweep) start alike and see the same
    batches, each read once for them all. With ``train.processes`` > 1 the seeds are shared out
    to as many processes (each resuming its share), whose outputs are merged into those one
    process writes; a checkpoint of a run in one process resumes in one. Under
    ``torchrun`` the ranks split the data streams (DistributedDataParallel) and rank 0 writes.
    A checkpoint at ``state_path`` every ``train.checkpoint_every`` steps resumes a killed run
    exactly, on any ranks and node, with the same settings (others are an error; ``restart``
    deletes it).

    Raises:
        CacheFormatError: the cache is incomplete, damaged (named), of another schema or teacher.
        ConfigError: a checkpoint made for other settings.
        OutputError: another run trains into the same place (on every rank at once).
    """
    labels = run_labels(students, train_cfg, sweep)
    shares = seed_shares(labels, train_cfg.processes)
    if len(shares) > 1 and not state_path.is_file():  # else: resume a one-process run
        return _in_processes(students, train_cfg, manifest, cache, out_dirs, state_path, log_dir,
                             shares, restart)  # fmt: skip
    return _here(students, per_process(train_cfg), manifest, cache, out_dirs, state_path, log_dir,
                 labels, restart)  # fmt: skip


def _here(students, train_cfg, manifest, cache, out_dirs, state_path, log_dir, labels, restart):
    """:func:`run` in this process, for the models of ``labels``."""
    device = distributed.setup(train_cfg.device, "train.device", train_cfg.dist_timeout)
    torch.set_num_threads(train_cfg.threads)
    try:
        with distributed.main_lock(state_path):
            if restart:
                forget(state_path)
            log = training_log(log_dir, labels)
            if not students:  # an empty sweep: its empty training log, so its outputs exist
                return save_outputs([], {}, None, train_cfg, {}, {}, log)
            header, utts, data, decode = training_data(cache, manifest, train_cfg, device, labels)
            runs = student_runs(students, header, read_frontend(cache), train_cfg, device,
                                labels, log)  # fmt: skip
            made_for = identity(students, train_cfg, header, utts)
            summary = train(runs, data, train_cfg, state_path, made_for, describe(labels), decode)
            if not distributed.is_main():
                return {}
            results = save_outputs(runs, students, header, train_cfg, summary, out_dirs, log, utts)
            state_path.unlink(missing_ok=True)
            return results
    finally:
        distributed.teardown()


def _in_processes(students, train_cfg, manifest, cache, out_dirs, state_path, log_dir, shares,
                  restart):  # fmt: skip
    """:func:`run` with each share of the seeds trained by a process of its own (spawned; the
    threads shared out too), each into ``.train_state.work/<share>/`` beside ``state_path``
    (where a killed share resumes), then merged into the outputs one process would write."""
    work = state_path.parent / f".{state_path.stem}.work"
    each = per_process(train_cfg)
    started = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")
    with distributed.main_lock(state_path), ProcessPoolExecutor(len(shares), spawn) as pool:
        jobs = [
            pool.submit(
                _share,
                i,
                share_students(students, share),
                each,
                manifest,
                cache,
                work / str(i),
                share,
                restart,
            )
            for i, share in enumerate(shares)
        ]
        try:
            parts = [(share, work / str(i), job.result()) for i, (share, job) in
                     enumerate(zip(shares, jobs, strict=True))]  # fmt: skip
        except BrokenProcessPool as err:
            raise ChildProcessError(
                f"{work}: a training process ended before its share of the "
                "seeds was trained (killed, or out of memory); run again: "
                "each share resumes from its last checkpoint"
            ) from err
        results = merge_shares(students, train_cfg, parts, out_dirs, log_dir,
                               time.perf_counter() - started)  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return results


def _share(index: int, students, cfg, manifest, cache, folder: Path, labels, restart) -> dict:
    """One process's share: its students' seeds trained into ``folder`` (only the first share
    shows a progress bar)."""
    if index:
        os.environ["HUBERT_KD_NO_PROGRESS"] = "1"
    out_dirs = {name: folder / name for name in students}
    return _here(students, cfg, manifest, cache, out_dirs, folder / STATE, folder / "log", labels,
                 restart)  # fmt: skip


def run_on_cluster(
    scheduler: str,
    students: dict[str, StudentConfig],
    train_cfg: TrainConfig,
    manifest: Path,
    cache: str | Path,
    out_dirs: dict[str, Path],
    state_dir: Path,
) -> dict[str, dict]:
    """A sweep spread over the workers of the dask.distributed cluster at ``scheduler``: each
    worker trains its share of the students in one pass over the cache (:func:`run`), writing
    every student's outputs exactly as a local run would (paths must be shared). A worker that
    dies has its share rerun elsewhere, resuming from that share's last checkpoint. Share ``i``
    logs its students' curves in ``state_dir/training-<i>``."""
    from distributed import Client

    train_cfg = dataclasses.replace(train_cfg, processes=1)  # a worker is a process already
    with Client(scheduler) as client:
        count = max(1, len(client.scheduler_info()["workers"]))
        names = list(students)
        shares = [names[i::count] for i in range(min(count, len(names)))]
        state_dir = Path(state_dir).resolve()
        futures = [
            client.submit(
                run, {n: students[n] for n in share}, train_cfg, Path(manifest).resolve(),
                cache if "://" in str(cache) else Path(cache).resolve(),
                {n: Path(out_dirs[n]).resolve() for n in share},
                state_dir / f"sweep_state-{i}.pt", state_dir / f"training-{i}", True,
                key=f"sweep-share-{i}", pure=False, retries=2,
            )
            for i, share in enumerate(shares)
        ]  # fmt: skip
        results: dict[str, dict] = {}
        for result in client.gather(futures):
            results.update(result)
    return results
