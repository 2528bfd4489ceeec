"""Stage `train`: train students from the teacher cache (the teacher never runs here)."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.students import StudentConfig
from pipeline.training import distributed
from pipeline.training.config import TrainConfig
from pipeline.training.loop import train
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
    batches, each read once for them all. Under ``torchrun`` the ranks split the data streams
    (DistributedDataParallel) and rank 0 writes. A checkpoint at ``state_path`` every
    ``train.checkpoint_every`` steps resumes a killed run exactly, on any ranks and node, with
    the same settings (others are an error; ``restart`` deletes it).

    Raises:
        CacheFormatError: the cache is incomplete, damaged (named), of another schema or teacher.
        ConfigError: a checkpoint made for other settings.
        OutputError: another run trains into the same place (on every rank at once).
    """
    device = distributed.setup(train_cfg.device, "train.device", train_cfg.dist_timeout)
    torch.set_num_threads(train_cfg.threads)
    try:
        with distributed.main_lock(state_path):
            if restart:
                forget(state_path)
            labels = run_labels(students, train_cfg, sweep)
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
