"""The parts of a rate's or a difference's variance (:mod:`pipeline.evaluation.compare`): the
replicates' spread, the test utterances' share (a bootstrap less the replicate x utterance
interaction), the interval they give, and the replicates a side a spread needs to resolve a
difference of a given size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spread:
    """What an estimate's variance is made of.

    Attributes:
        sides: per side, the variance between its replicates' rates (``s^2``, None with one
            replicate) and their number ``m``: one side for a model's rate or a paired
            difference (the per-seed differences), two for an unpaired difference.
        utterances: ``V_u``, what the sampling of the test utterances adds.
        n_utterances: their number (``V_u``'s degrees of freedom are one fewer).
    """

    sides: tuple[tuple[float | None, int], ...]
    utterances: float
    n_utterances: int

    def parts(self, m: int | None = None) -> list[tuple[float, float]]:
        """Each part's variance and degrees of freedom, with ``m`` replicates a side (default:
        each side's own); None where a side has no spread estimate."""
        parts = [(s2 / (m or k), (m or k) - 1) for s2, k in self.sides if s2 is not None]
        return [*parts, (self.utterances, self.n_utterances - 1)]

    def half_width(self, confidence: float, m: int | None = None) -> tuple[float, float] | None:
        """``(half-width, degrees of freedom)`` of the interval, or None without one (a side of
        one replicate, or nothing varies)."""
        from scipy.stats import t as student_t

        if any(s2 is None for s2, _ in self.sides):
            return None
        parts = self.parts(m)
        var = sum(p for p, _ in parts)
        if var < 1e-18:
            return None
        dof = var * var / sum(p * p / k for p, k in parts if k > 0 and p > 0)
        return float(student_t.ppf(0.5 + confidence / 2, dof)) * math.sqrt(var), dof


def seeds_needed(spread: Spread, size: float, confidence: float) -> int | None:
    """The fewest replicates a side (as many on each) whose interval, with the spread measured
    between replicates, is narrower than ``size`` each way: what resolving a difference of
    ``size`` takes. None when seeds cannot get there: the utterances' part alone is as wide
    (more test utterances would be needed), or ``size`` is 0."""
    from scipy.stats import t as student_t

    limit = student_t.ppf(0.5 + confidence / 2, max(spread.n_utterances - 1, 1))
    if size <= 0 or limit * math.sqrt(spread.utterances) >= size:
        return None

    def narrow_enough(m: int) -> bool:
        return spread.half_width(confidence, m)[0] < size

    high = 2
    while not narrow_enough(high):
        if high > 10**7:
            return None  # the limit is so near ``size`` that no number of seeds is practical
        high *= 2
    low = high // 2  # narrow_enough(high) holds; find the smallest such m in (low, high]
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if narrow_enough(mid) else (mid, high)
    return max(high, 2)


def bootstrap_variance(numerators: np.ndarray, tokens: np.ndarray, draws: int, seed: int) -> float:
    """Variance of ``sum(numerators) / sum(tokens)`` over utterances drawn with replacement."""
    if draws < 2 or len(tokens) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, draws, 256):  # (chunk, U) indices at a time: bounded memory
        idx = rng.integers(0, len(tokens), size=(min(256, draws - start), len(tokens)))
        values.append(numerators[idx].sum(1) / np.maximum(tokens[idx].sum(1), 1.0))
    return float(np.concatenate(values).var(ddof=1))


def interaction(counts) -> float:
    """The replicate x utterance interaction's share of one replicate's rate variance: the
    residuals of ``e[r, u]`` after each utterance's mean over replicates and each replicate's
    shift (its rate's deviation, spread over utterances by their tokens), squared and summed,
    over ``(m - 1) N^2`` (``N`` tokens). Zero with one replicate."""
    m = len(counts.errors)
    if m < 2:
        return 0.0
    tokens = counts.tokens.astype(np.float64)
    shift = (counts.rates - counts.rates.mean())[:, None] * tokens[None, :]
    residual = counts.errors - counts.errors.mean(0)[None, :] - shift
    return float((residual**2).sum() / ((m - 1) * max(tokens.sum(), 1.0) ** 2))
