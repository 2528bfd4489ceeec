"""Weight averaging: the weights a run keeps are an average of those it passed through over
the last part of its training, not its last step's (``train.average``).

- ``none``: the last step's weights.
- ``swa``: the equal-weight mean of the weights after every step from ``start`` (a fraction of
  the steps) on: stochastic weight averaging (Izmailov et al., 2018) over the tail of the
  learning-rate schedule.
- ``ema``: an exponential moving average of the weights with ``decay`` per step, from
  ``start`` on.

Both keep the average in :class:`torch.optim.swa_utils.AveragedModel` (parameters and buffers;
the students have no batch norm, so no statistics need recomputing), checkpointed with the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline.core.config import check
from pipeline.core.registry import Registry

AVERAGES: Registry = Registry("weight average")


class WeightAverage:
    """A running average of a model's weights, from update ``first_step`` (0-based) on."""

    def __init__(self, model: nn.Module, first_step: int, multi_avg_fn=None) -> None:
        self.first_step = first_step
        self.averaged = AveragedModel(model, multi_avg_fn=multi_avg_fn, use_buffers=True)

    def update(self, model: nn.Module, step: int) -> None:
        """Take in the weights ``model`` has after update ``step``."""
        if step >= self.first_step:
            self.averaged.update_parameters(model)

    @property
    def model(self) -> nn.Module:
        """The averaged model (the last weights until the first update is taken in)."""
        return self.averaged.module

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)


def _first_step(start: float, steps: int) -> int:
    return min(int(start * steps), steps - 1)


@dataclass(frozen=True)
class NoAverageConfig:
    """``{kind: none}``: keep the last step's weights."""


@AVERAGES.register
class LastWeights:
    name = "none"
    config_type = NoAverageConfig

    def __init__(self, cfg: NoAverageConfig) -> None:
        self.cfg = cfg

    def attach(self, model: nn.Module, steps: int) -> WeightAverage | None:
        return None


@dataclass(frozen=True)
class SWAConfig:
    """Attributes:
    start: the fraction of the steps after which every step's weights join the mean.
    """

    start: float

    def __post_init__(self) -> None:
        check(0 <= self.start < 1, "start", f"must be in [0, 1), got {self.start}")


@AVERAGES.register
class StochasticWeightAverage:
    name = "swa"
    config_type = SWAConfig

    def __init__(self, cfg: SWAConfig) -> None:
        self.cfg = cfg

    def attach(self, model: nn.Module, steps: int) -> WeightAverage:
        return WeightAverage(model, _first_step(self.cfg.start, steps))


@dataclass(frozen=True)
class EMAConfig:
    """Attributes:
    decay: the weight the average keeps per step (0.99: a memory of about 100 steps).
    start: the fraction of the steps after which the average follows the weights.
    """

    decay: float
    start: float

    def __post_init__(self) -> None:
        check(0 < self.decay < 1, "decay", f"must be in (0, 1), got {self.decay}")
        check(0 <= self.start < 1, "start", f"must be in [0, 1), got {self.start}")


@AVERAGES.register
class ExponentialMovingAverage:
    name = "ema"
    config_type = EMAConfig

    def __init__(self, cfg: EMAConfig) -> None:
        self.cfg = cfg

    def attach(self, model: nn.Module, steps: int) -> WeightAverage:
        fn = get_ema_multi_avg_fn(self.cfg.decay)
        return WeightAverage(model, _first_step(self.cfg.start, steps), multi_avg_fn=fn)
