"""One model in training: optimizer, schedule, weighted loss terms, and its logged curve."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from pipeline.core.device import autocast
from pipeline.training import distributed
from pipeline.training.averaging import WeightAverage
from pipeline.training.batches import Batch
from pipeline.training.config import LoopConfig


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def micro_seed(seed: int, step: int, stream: int) -> int:
    """The RNG seed of one micro-batch (dropout, masking): a function of the step and the data
    stream only, so a model draws the same masks alone or in a sweep, on any number of ranks,
    and after a resume."""
    return ((seed * 1_000_003 + step) << 10) + stream


class TrainOutputs(nn.Module):
    """``model.train_outputs(batch)`` as a forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> dict:
        return self.model.train_outputs(batch)


class Trainee:
    """A model trained by the loop: AdamW, warm-up then linear decay, clipping, mixed precision.

    ``model.train_outputs(batch)`` gives what the ``losses`` (name -> registered loss, called as
    ``loss(outputs, batch) -> {terms}``) score; the total is their weighted sum, distillation
    terms scaled up over ``distill_warmup_steps``. Loss values stay on the device and are read
    every ``log_every`` steps into the curve, each point also given to ``on_point`` (a logger);
    a curve restored from a checkpoint is given to it again, point by point. ``seed`` (default
    ``cfg.seed``) seeds its dropout and masking; its initial weights are the caller's.
    ``average``: a running average of its weights (:mod:`pipeline.training.averaging`), which
    :attr:`final_model` is, if given.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        losses: dict[str, Callable],
        cfg: LoopConfig,
        device: torch.device,
        distill_warmup_steps: int = 0,
        on_point: Callable[[dict], None] | None = None,
        seed: int | None = None,
        average: WeightAverage | None = None,
    ) -> None:
        self.name = name
        self.seed = cfg.seed if seed is None else seed
        self.on_point = on_point
        self.device = device
        self.model = model.to(device)
        self.module = distributed.wrap(TrainOutputs(self.model), device)
        self.losses = losses
        self.cfg = cfg
        self.distill_warmup_steps = distill_warmup_steps
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )  # fmt: skip
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.steps)
        )
        self.average = average
        self.curve: list[dict] = []
        self.window: dict[str, torch.Tensor] = {}
        self.window_steps = 0

    @property
    def final_model(self) -> nn.Module:
        """The weights the run keeps: their average, or the last step's."""
        return self.model if self.average is None else self.average.model

    def step(self, micro: list[tuple[int, Batch]], step: int, frames: torch.Tensor) -> None:
        """One update on this rank's micro-batches ``(stream, batch)``; ``frames`` is the
        update's frame count over every rank, so each frame weighs the same wherever it is."""
        cfg = self.cfg
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        warm = min(1.0, step / self.distill_warmup_steps) if self.distill_warmup_steps else 1.0
        share = distributed.world_size() / frames  # DDP averages over ranks: undo it
        for i, (stream, batch) in enumerate(micro):
            weight = batch.num_frames * share
            batch = batch.to(self.device)
            torch.manual_seed(micro_seed(self.seed, step, stream))
            last = i == len(micro) - 1
            sync = last or not hasattr(self.module, "no_sync")  # DDP: reduce once, at the end
            with nullcontext() if sync else self.module.no_sync():
                terms = self._terms(batch, warm)
                self.scaler.scale(terms["loss"] * weight).backward()
            for key, value in terms.items():
                logged = value.detach() * weight / distributed.world_size()
                self.window[key] = self.window.get(key, 0.0) + logged
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        if self.average is not None:
            self.average.update(self.model, step)
        self.window_steps += 1
        if self.window_steps >= cfg.log_every or step == cfg.steps - 1:
            self._log(step)

    def _terms(self, batch: Batch, warm: float) -> dict[str, torch.Tensor]:
        with autocast(self.device, self.cfg.precision):
            outputs = self.module(batch)
        outputs = _float(outputs)  # losses in fp32
        for produced in (outputs.get("logits"), *outputs.get("features", {}).values()):
            if produced is not None and produced.shape[:2] != batch.frame_mask.shape:
                got, want = tuple(produced.shape[:2]), tuple(batch.frame_mask.shape)
                raise RuntimeError(f"{self.name} gives {got} frames, the batch has {want}")
        terms, total = {}, batch.frame_mask.new_zeros((), dtype=torch.float32)
        for name, loss in self.losses.items():
            parts = loss(outputs, batch)
            scale = warm if getattr(loss, "distillation", False) else 1.0
            total = total + loss.cfg.weight * scale * parts[name]
            terms.update(parts)
        return {**terms, "loss": total}

    def _log(self, step: int) -> None:
        """Sum the window over the ranks and read it off the device: one sync per log point."""
        keys = sorted(self.window)
        values = distributed.all_sum(torch.stack([torch.as_tensor(self.window[k]).float()
                                                  for k in keys]).to(self.device))  # fmt: skip
        means = (values / self.window_steps).tolist()
        lr = self.schedule.get_last_lr()[0]
        self.curve.append({"step": step + 1, "lr": lr, **dict(zip(keys, means, strict=True))})
        self.window, self.window_steps = {}, 0
        if self.on_point is not None:
            self.on_point(self.curve[-1])

    @property
    def last_loss(self) -> float | None:
        return self.curve[-1]["loss"] if self.curve else None

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "curve": self.curve,
            "window": {k: torch.as_tensor(v).cpu() for k, v in self.window.items()},
            "window_steps": self.window_steps,
            "average": None if self.average is None else self.average.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.curve = state["curve"]
        self.window = {k: v.to(self.device) for k, v in state["window"].items()}
        self.window_steps = state["window_steps"]
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        for point in self.curve if self.on_point is not None else ():
            self.on_point(point)


def _float(outputs: dict) -> dict:
    """Floating model outputs as float32 (tensors and dicts of tensors); masks stay as they are."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.float() if t.is_floating_point() else t

    return {
        k: {n: cast(t) for n, t in v.items()} if isinstance(v, dict) else cast(v)
        for k, v in outputs.items()
    }
