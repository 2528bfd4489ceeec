"""The one training loop: AdamW, warm-up then linear decay, weighted loss terms from the cache."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.core.config import check, non_negative, positive
from pipeline.core.device import autocast, check_device, check_precision, resolve_device
from pipeline.core.io import atomic_file
from pipeline.core.progress import progress_bar
from pipeline.core.safe_load import load_weights
from pipeline.training.batches import Batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """The `train` section of params.yaml (shared by every student).

    Attributes:
        seed: seed for weights, batching and dropout.
        steps: optimizer updates.
        batch_seconds: padded audio per batch.
        lr: peak learning rate.
        warmup_steps: linear warm-up of the learning rate, then linear decay to 0 at ``steps``.
        weight_decay: AdamW weight decay.
        grad_clip: max global gradient norm.
        distill_warmup_steps: distillation terms are scaled by ``min(step / this, 1)`` (0: off).
        threads: torch intra-op threads.
        device: ``cpu`` or ``cuda``.
        precision: ``fp32``, or ``bf16``/``fp16`` autocast (CUDA; fp16 with gradient scaling).
        log_every: steps per logged curve point.
        checkpoint_every: steps between resumable checkpoints (0: none).
        shuffle_pool: utterances shuffled and length-bucketed together while streaming.
        loader_workers: DataLoader worker processes reading the cache and audio (0: none).
        expect_teacher: a teacher fingerprint (or its prefix) the cache must carry; "" accepts
            any cache (its fingerprint is recorded in each checkpoint either way).
    """

    seed: int
    steps: int
    batch_seconds: float
    lr: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    distill_warmup_steps: int
    threads: int
    device: str
    precision: str
    log_every: int
    checkpoint_every: int
    shuffle_pool: int
    loader_workers: int
    expect_teacher: str

    def __post_init__(self) -> None:
        check_precision(self.precision)
        check_device(self.device)
        positive(self, "steps", "batch_seconds", "lr", "grad_clip", "threads", "log_every")
        non_negative(self, "warmup_steps", "weight_decay", "distill_warmup_steps",
                     "checkpoint_every", "shuffle_pool", "loader_workers")  # fmt: skip
        check(self.warmup_steps <= self.steps, "warmup_steps", "must be <= steps")


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


class StudentRun:
    """One student in training: model, optimizer, schedule, losses, and its logged curve.

    Each run keeps its own torch RNG state, so runs trained side by side on the same batches
    (a sweep) draw the same dropout masks as when trained alone.
    """

    def __init__(self, name: str, model: nn.Module, losses: dict[str, Callable], cfg: TrainConfig):
        self.name = name
        self.device = resolve_device(cfg.device, "train.device")
        self.model = model.to(self.device)
        self.losses = losses
        self.cfg = cfg
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.steps)
        )
        self.rng = self._get_rng()
        self.curve: list[dict] = []
        self.window: dict[str, float] = defaultdict(float)
        self.window_steps = 0

    def step(self, batch: Batch, step: int) -> float:
        """One update on ``batch``; returns the total loss."""
        cfg = self.cfg
        self._set_rng(self.rng)
        self.model.train()
        batch = batch.to(self.device)
        with autocast(self.device, cfg.precision):
            outputs = self.model.train_outputs(batch)
        outputs = _float(outputs)  # losses in fp32
        for produced in (outputs.get("logits"), *outputs.get("features", {}).values()):
            if produced is not None and produced.shape[:2] != batch.frame_mask.shape:
                got, want = tuple(produced.shape[:2]), tuple(batch.frame_mask.shape)
                raise RuntimeError(f"student {self.name} gives {got} frames, the cache {want}")
        warm = min(1.0, step / cfg.distill_warmup_steps) if cfg.distill_warmup_steps else 1.0
        total = batch.frame_mask.new_zeros((), dtype=torch.float32)
        for name, loss in self.losses.items():
            terms = loss(outputs, batch)
            total = total + loss.cfg.weight * (warm if loss.distillation else 1.0) * terms[name]
            for key, value in terms.items():
                self.window[key] += value.item()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        self.rng = self._get_rng()

        self.window["loss"] += total.item()
        self.window_steps += 1
        if self.window_steps == cfg.log_every or step == cfg.steps - 1:
            point = {k: v / self.window_steps for k, v in self.window.items()}
            self.curve.append({"step": step + 1, "lr": self.schedule.get_last_lr()[0], **point})
            self.window, self.window_steps = defaultdict(float), 0
        return total.item()

    def _get_rng(self) -> list[torch.Tensor]:
        cuda = [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else []
        return [torch.get_rng_state(), *cuda]

    def _set_rng(self, states: list[torch.Tensor]) -> None:
        torch.set_rng_state(states[0])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(states[1], self.device)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": self.rng,
            "curve": self.curve,
            "window": dict(self.window),
            "window_steps": self.window_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.rng = state["rng"]
        self.curve = state["curve"]
        self.window = defaultdict(float, state["window"])
        self.window_steps = state["window_steps"]


def _float(outputs: dict) -> dict:
    """Student outputs as float32 (tensors and dicts of tensors)."""
    return {
        k: {n: t.float() for n, t in v.items()} if isinstance(v, dict) else v.float()
        for k, v in outputs.items()
    }


def train(
    runs: list[StudentRun],
    epochs: Callable[[int, int], Iterable[Batch]],
    cfg: TrainConfig,
    state_path: Path | None = None,
    identity: dict | None = None,
    description: str = "train",
) -> dict:
    """Train every run for ``cfg.steps`` updates on the same batches, each read once.

    Args:
        runs: the students (one for ``train-student``, a grid for ``sweep``).
        epochs: ``epochs(e, k)`` gives the batches of epoch ``e`` from its ``k``-th on (a
            deterministic stream).
        cfg: training settings (shared by the runs).
        state_path: where to checkpoint every ``cfg.checkpoint_every`` steps; an existing
            checkpoint there is resumed exactly (weights, optimizer, schedule, RNG, data position).
        identity: what the checkpoint must have been made for (configs, cache); a checkpoint
            with another identity is discarded, never resumed.

    Returns:
        The run summary: steps, seconds, frames/s (of this invocation), resumed-from step.
    """
    position = {"step": 0, "epoch": 0, "batch": 0}
    key = json.dumps({"runs": [r.name for r in runs], **(identity or {})}, sort_keys=True)
    if state_path is not None and state_path.is_file():
        saved = load_weights(state_path, "training state (delete it to start afresh)")
        if saved.get("identity") == key:
            for run, state in zip(runs, saved["states"], strict=True):
                run.load_state_dict(state)
            position = saved["position"]
            log.info("resuming from %s at step %d", state_path, position["step"])
        else:
            log.warning("ignoring %s: it was made for other settings", state_path)
    if state_path is not None:
        state_path.parent.mkdir(parents=True, exist_ok=True)
    resumed_from = position["step"]
    frames, start = 0, time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(description, total=cfg.steps, completed=resumed_from, info="")
        stream = _positioned(epochs, position["epoch"], position["batch"])
        for step in range(resumed_from, cfg.steps):
            epoch, index, batch = next(stream)
            losses = [run.step(batch, step) for run in runs]
            frames += batch.num_frames
            position = {"step": step + 1, "epoch": epoch, "batch": index + 1}
            rate = frames * len(runs) / (time.perf_counter() - start)
            bar.update(
                task, advance=1, info=f"loss {sum(losses) / len(losses):.3f}  {rate:,.0f} frames/s"
            )
            if (
                state_path is not None
                and cfg.checkpoint_every
                and (step + 1) % cfg.checkpoint_every == 0
            ):
                states = [r.state_dict() for r in runs]
                payload = {"identity": key, "states": states, "position": position}
                with atomic_file(state_path) as tmp:
                    torch.save(payload, tmp)
    seconds = time.perf_counter() - start
    return {
        "steps": cfg.steps,
        "resumed_from_step": resumed_from,
        "seconds": round(seconds, 2),
        "frames_per_second": round(frames * len(runs) / max(seconds, 1e-9), 1),
    }


def _positioned(epochs: Callable[[int, int], Iterable[Batch]], epoch: int, skip: int):
    """``(epoch, index, batch)`` from epoch ``epoch``, batch ``skip`` on, forever."""
    while True:
        for index, batch in enumerate(epochs(epoch, skip), start=skip):
            yield epoch, index, batch
        epoch, skip = epoch + 1, 0
