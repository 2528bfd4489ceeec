"""The one training loop: AdamW, warm-up then linear decay, weighted loss terms from the cache."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.data import Batch
from pipeline.progress import progress_bar


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
        log_every: steps per logged curve point.
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
    log_every: int
    shuffle_pool: int
    loader_workers: int
    expect_teacher: str

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup_steps < 0 or self.warmup_steps > self.steps:
            raise ValueError("need steps >= 1 and 0 <= warmup_steps <= steps")


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train(
    model: nn.Module,
    losses: dict[str, Callable],
    batches: Iterator[Batch],
    cfg: TrainConfig,
    description: str = "train",
) -> tuple[list[dict], dict]:
    """Train ``model`` for ``cfg.steps`` updates.

    Args:
        model: maps ``(wav, lengths)`` to ``(logits (B, T, C), frame_lengths)``.
        losses: name -> registered loss wrapper (with ``cfg.weight`` and ``distillation``).
        batches: an endless iterator of batches.
        cfg: training settings.

    Returns:
        ``(curve, summary)``: one dict per logged point (mean of each term and the total over
        the window, lr), and the run summary (steps, seconds, frames/s, last window's terms).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.steps)
    )
    curve: list[dict] = []
    window: dict[str, float] = defaultdict(float)
    window_steps, frames, start = 0, 0, time.perf_counter()
    model.train()
    with progress_bar() as bar:
        task = bar.add_task(description, total=cfg.steps, info="")
        for step in range(cfg.steps):
            batch = next(batches)
            logits, _ = model(batch.wav, batch.lengths)
            if logits.shape[:2] != batch.frame_mask.shape:
                got, want = tuple(logits.shape[:2]), tuple(batch.frame_mask.shape)
                raise RuntimeError(f"student gives {got} frames, the cache {want}")
            warm = min(1.0, step / cfg.distill_warmup_steps) if cfg.distill_warmup_steps else 1.0
            total = logits.new_zeros(())
            for name, loss in losses.items():
                terms = loss(logits, batch.teacher_logits, batch.targets, batch.frame_mask)
                total = total + loss.cfg.weight * (warm if loss.distillation else 1.0) * terms[name]
                for key, value in terms.items():
                    window[key] += value.item()
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            schedule.step()

            window["loss"] += total.item()
            window_steps += 1
            frames += batch.num_frames
            rate = frames / (time.perf_counter() - start)
            bar.update(task, advance=1, info=f"loss {total.item():.3f}  {rate:,.0f} frames/s")
            if window_steps == cfg.log_every or step == cfg.steps - 1:
                point = {k: v / window_steps for k, v in window.items()}
                curve.append({"step": step + 1, "lr": schedule.get_last_lr()[0], **point})
                window, window_steps = defaultdict(float), 0
    seconds = time.perf_counter() - start
    summary = {
        "steps": cfg.steps,
        "seconds": round(seconds, 2),
        "frames_per_second": round(frames / seconds, 1),
        "final": {k: v for k, v in curve[-1].items() if k not in ("step", "lr")},
    }
    return curve, summary
