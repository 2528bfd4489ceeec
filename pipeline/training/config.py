"""Training settings: what every loop shares, and what training students adds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from pipeline.core.config import Choice, check, non_negative, positive, to_dict
from pipeline.core.device import check_device, check_precision
from pipeline.training.averaging import AVERAGES


@dataclass(frozen=True)
class LoopConfig:
    """The settings of the one training loop (students and teacher pre-training alike).

    Attributes:
        seed: the training seed of a model without seeds of its own (a student's ``seeds``):
            its weights, dropout and batch order.
        steps: optimizer updates.
        batch_seconds: padded audio per update, over every micro-batch and every rank.
        lr: peak learning rate.
        warmup_steps: linear warm-up of the learning rate, then linear decay to 0 at ``steps``.
        weight_decay: AdamW weight decay.
        grad_clip: max global gradient norm (> 0).
        threads: torch intra-op threads (of all the processes together).
        device: ``cpu``, ``cuda`` or ``cuda:<index>`` (under torchrun, each rank takes
            ``cuda:<LOCAL_RANK>``).
        precision: ``fp32``, or ``bf16``/``fp16`` autocast (CUDA; fp16 with gradient scaling).
        log_every: steps per logged curve point (losses are read off the device only then).
        checkpoint_every: steps between resumable checkpoints (0: none).
    """

    seed: int
    steps: int
    batch_seconds: float
    lr: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    threads: int
    device: str
    precision: str
    log_every: int
    checkpoint_every: int

    def __post_init__(self) -> None:
        check_precision(self.precision)
        check_device(self.device)
        positive(self, "steps", "batch_seconds", "lr", "grad_clip", "threads", "log_every")
        non_negative(self, "warmup_steps", "weight_decay", "checkpoint_every")
        check(self.warmup_steps <= self.steps, "warmup_steps", "must be <= steps")


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """The `train` section of params.yaml (shared by every student): the loop's settings and

    Attributes:
        distill_warmup_steps: distillation terms are scaled by ``min(step / this, 1)`` (0: off).
        streams: data streams that make up each update: the cache's blocks are dealt to them,
            each gives a micro-batch of ``batch_seconds / streams``, and their gradients are
            summed. Data-parallel ranks split the streams, so the updates (and the weights) do
            not depend on how many ranks run them; any rank count that divides ``streams``
            works, and a run resumes on another one.
        shuffle_pool: utterances shuffled and length-bucketed together while streaming.
        loader_workers: DataLoader worker processes reading the cache and audio, per stream
            (0: none). Each worker streams its own share of the blocks, so the order of the
            batches depends on their number: 0 and 1 give the same order, any other count
            another one, and a resume keeps the count.
        expect_teacher: a teacher fingerprint (or its prefix) the cache must carry; "" accepts
            any cache (its fingerprint is recorded in each checkpoint either way).
        dist_timeout: seconds a data-parallel rank waits for the others in a collective before
            the run fails (torchrun).
        processes: processes training a run's seeds side by side, each its share of the seeds
            (whole seeds: every model of a seed in one process) and of ``threads``; 1: this
            process. On a CPU, small students train 1.7x to 1.9x as fast in 2 processes of one
            thread as in one of 2 (``bench/seed_cost.py``). Ignored under ``torchrun``. A
            killed run resumes with the same number (each share its own checkpoint), or in one
            process where it was in one.
        average: the weights each student keeps: ``{kind: none}`` (the last step's), ``{kind:
            swa, start}`` or ``{kind: ema, decay, start}`` (an average over the last part of
            training, :mod:`pipeline.training.averaging`).

    A run resumes from its checkpoint across changes of the :data:`OPERATIONAL` settings (how
    it runs: another node, thread count or logging cadence); any other change is refused.
    """

    distill_warmup_steps: int
    streams: int
    shuffle_pool: int
    loader_workers: int
    expect_teacher: str
    dist_timeout: float
    processes: int
    average: Annotated[Choice, AVERAGES]

    OPERATIONAL: ClassVar[tuple[str, ...]] = (
        "threads", "device", "log_every", "checkpoint_every", "expect_teacher", "dist_timeout",
        "processes",
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "streams", "dist_timeout", "processes")
        non_negative(self, "distill_warmup_steps", "shuffle_pool", "loader_workers")

    def result_settings(self) -> dict:
        """The settings the trained weights depend on (all but the operational ones), with
        ``loader_workers`` 0 written as 1: both stream the blocks in the same order."""
        settings = {k: v for k, v in to_dict(self).items() if k not in self.OPERATIONAL}
        return {**settings, "loader_workers": max(self.loader_workers, 1)}
