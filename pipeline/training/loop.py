"""The one training loop: every model trained here (students, sweeps, the demo teacher's
pre-training) goes through :func:`train`, so resume, precision, progress and checkpoints exist
once."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.core import faults
from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_file
from pipeline.core.progress import progress_bar
from pipeline.core.safe_load import load_weights
from pipeline.training import distributed
from pipeline.training.batches import Batch
from pipeline.training.config import LoopConfig
from pipeline.training.epochs import StreamSet
from pipeline.training.trainee import Trainee

log = logging.getLogger(__name__)


def train(
    runs: list[Trainee],
    streams: Mapping[int, StreamSet],
    cfg: LoopConfig,
    state_path: Path | None = None,
    identity: dict | None = None,
    description: str = "train",
    prepare: Callable[[Batch], Batch] | None = None,
) -> dict:
    """Train every run for ``cfg.steps`` updates, each on the batches of its seed's data, each
    batch read once for all the runs of that seed.

    Args:
        runs: the models (one student's training seeds, a sweep's grid, the teacher in
            pre-training).
        streams: by training seed (each run's ``seed``), this rank's data streams of that
            seed's batch order; each update of a run takes one micro-batch from each of them.
        cfg: the loop's settings (shared by the runs).
        state_path: where rank 0 checkpoints every ``cfg.checkpoint_every`` steps; a checkpoint
            there is resumed exactly (weights, optimizer, schedule, data position), on any
            number of ranks.
        identity: what the checkpoint must have been made for (what the weights depend on); a
            checkpoint made for another is an error naming what differs, never overwritten.
        prepare: makes each streamed micro-batch trainable, once for every run (moves it to
            the device and decodes its teacher logits there).

    Returns:
        The run summary: steps, seconds, frames/s (of this invocation, all ranks), resumed-from
        step.
    """
    groups = {seed: [r for r in runs if r.seed == seed] for seed in streams}
    if sum(map(len, groups.values())) != len(runs):
        raise ValueError(f"runs of seeds {sorted({r.seed for r in runs})} but data streams of "
                         f"seeds {sorted(streams)}")  # fmt: skip
    orders = sorted(streams)
    key = json.loads(json.dumps({"runs": [r.name for r in runs], "batch_orders": orders,
                                 **(identity or {})}))  # fmt: skip
    first = _resume(runs, streams, state_path, key)
    frames, start = 0, time.perf_counter()
    with progress_bar(enabled=distributed.is_main()) as bar:
        task = bar.add_task(description, total=cfg.steps, completed=first, info="")
        for step in range(first, cfg.steps):
            for seed, group in groups.items():
                micro = next(streams[seed])
                local = sum(batch.num_frames for _, batch in micro)  # counted on the CPU
                if prepare is not None:
                    micro = [(k, prepare(batch)) for k, batch in micro]
                total = _global(local, runs[0].device)
                for run in group:
                    run.step(micro, step, total)
                frames += local * len(group)
            rate = frames * distributed.world_size() / (time.perf_counter() - start)
            losses = [r.last_loss for r in runs if r.last_loss is not None]
            shown = f"loss {sum(losses) / len(losses):.3f}  " if losses else ""
            bar.update(task, advance=1, info=f"{shown}{rate:,.0f} frames/s")
            if (
                state_path is not None
                and cfg.checkpoint_every
                and (step + 1) % (cfg.checkpoint_every) == 0
            ):
                _checkpoint(runs, streams, state_path, key, step + 1)
    seconds = time.perf_counter() - start
    return {
        "steps": cfg.steps,
        "resumed_from_step": first,
        "seconds": round(seconds, 2),
        "frames_per_second": round(frames * distributed.world_size() / max(seconds, 1e-9), 1),
    }


def _global(local: int, device: torch.device) -> float | torch.Tensor:
    """The update's frame count over every rank (a device tensor under torchrun)."""
    if distributed.world_size() == 1:
        return float(local)
    return distributed.all_sum(torch.tensor(float(local), device=device))


def _resume(
    runs: list[Trainee], streams: Mapping[int, StreamSet], state_path: Path | None, key: dict
) -> int:
    """Load a checkpoint made for ``key``; returns the step to continue from (0 if none).

    Raises:
        ConfigError: the checkpoint was made for other settings (the differing keys named).
    """
    if state_path is None or not state_path.is_file():
        return 0
    saved = load_weights(state_path, "training state (delete it to start afresh)")
    made_for = saved.get("identity")
    if made_for != key:
        changed = differences(made_for, key) if isinstance(made_for, dict) else ["its format"]
        raise ConfigError(
            f"{state_path}: a checkpoint of this run at step {saved.get('step')}, made for other "
            f"settings ({'; '.join(changed[:6])}{'; ...' if len(changed) > 6 else ''}): resume "
            "with the same settings, or start afresh with --restart (it deletes the checkpoint)"
        )
    for run, state in zip(runs, saved["states"], strict=True):
        run.load_state_dict(state)
    for seed, stream in streams.items():
        stream.restore(saved["streams"][str(seed)])
    log.info("resuming from %s at step %d", state_path, saved["step"])
    return saved["step"]


def differences(old: Any, new: Any, key: str = "") -> list[str]:
    """``key: old -> new`` for each dotted key whose value differs between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in differences(old.get(k), new.get(k), f"{key}.{k}" if key
                                                    else k)]  # fmt: skip
    return [] if old == new else [f"{key}: {old!r} -> {new!r}"]


def _checkpoint(
    runs: list[Trainee], streams: Mapping[int, StreamSet], path: Path, key: dict, step: int
) -> None:
    positions = {str(seed): s.state() for seed, s in streams.items()}  # collectives: all ranks
    if distributed.is_main():
        payload = {"identity": key, "states": [r.state_dict() for r in runs],
                   "streams": positions, "step": step}  # fmt: skip
        with atomic_file(path) as tmp:
            torch.save(payload, tmp)
    distributed.barrier()
    faults.reached("checkpoint", step)
