"""Error rates with intervals, and paired comparisons of two models, counting every source of
variance: the model's replicate runs (training seeds, with their probe seeds) and the sampling
of the test utterances.

A model's error rate (WER, CER, PER) on a split is a sample. For run ``r`` (one training seed
and one probe seed) and utterance ``u``, ``e[r, u]`` edit errors against ``n[u]`` reference
tokens; run ``r`` scores ``R[r] = sum_u e[r, u] / sum_u n[u]``. A **replicate** is what another
training of the model would redraw: the runs of one training seed (their probe seeds
averaged), or, for a model trained elsewhere (the teacher, a baseline), each probe seed. The
model's rate is the mean over its replicates.

The difference of two models A - B on the same utterances is ``D = mean R_A - mean R_B``, with
the variance

    V = s_A^2 / m_A + s_B^2 / m_B + V_u

where ``s^2`` is the variance between a model's replicates on this test set and ``m`` their
number (Welch's two-sample variance), and ``V_u`` what the sampling of the test utterances adds:
the variance of ``D`` over a paired bootstrap of the utterances (Bisani & Ney, ICASSP 2004:
utterances drawn with replacement, the same ones for both models, each model's errors averaged
over its replicates), less the part of it that ``s^2`` already holds. That part is the
replicate x utterance interaction (which utterances each replicate gets wrong): it is in the
replicates' spread on a finite test set and, averaged over the ``m`` replicates, in the
bootstrapped errors too; counted twice, it would widen the interval (by up to 1.4x where it is
all the variance there is). It is estimated from the residuals of an additive fit (utterance +
replicate shift) and taken out of the bootstrap's variance once. The interval is
``D +- t_nu sqrt(V)``, with Welch-Satterthwaite's degrees of freedom ``nu``: with three seeds a
side and seeds dominating, ``nu`` is near 4 and the interval wide, as it should be. A model
with one replicate has no estimate of its seed variance: its comparisons get no interval and
stay not resolved. Each verdict stands alone: a report of many pairs and rates is not
corrected for their number (at 95%, about one verdict in twenty where nothing differs may
still come out better or worse).

The verdict: ``better`` (A's errors are lower) when the whole interval is below 0, ``worse``
when above, ``not resolved`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ErrorCounts:
    """One model's errors on one split for one metric.

    Attributes:
        ids: the utterances, ``(U,)``.
        tokens: reference tokens (words, characters or phonemes) of each utterance, ``(U,)``.
        errors: edit errors (substitutions + deletions + insertions), ``(M, U)``: one row per
            replicate (a training seed's runs averaged over its probe seeds).
    """

    ids: tuple[str, ...]
    tokens: np.ndarray
    errors: np.ndarray

    def __post_init__(self) -> None:
        if self.errors.ndim != 2 or not self.errors.shape[1] == len(self.ids) == len(self.tokens):
            raise ValueError(f"errors {self.errors.shape} do not match {len(self.ids)} utterances")

    @property
    def rates(self) -> np.ndarray:
        """Each replicate's error rate, ``(M,)``."""
        return self.errors.sum(1) / max(float(self.tokens.sum()), 1.0)


def replicates(runs: list[dict]) -> list[list[int]]:
    """The runs of each replicate of a model (indices into ``runs``, each run a ``{"train_seed":
    int | None, "probe_seed": int}``): the runs of one training seed are one replicate; runs
    without a training seed (a model not trained here) are each their own."""
    groups: dict[object, list[int]] = {}
    for i, run in enumerate(runs):
        key = run["train_seed"] if run.get("train_seed") is not None else ("probe", i)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def replicate_errors(runs: list[dict], errors: list[list[float]]) -> np.ndarray:
    """Each run's per-utterance errors averaged within its replicate, ``(M, U)``."""
    table = np.asarray(errors, dtype=np.float64)
    return np.stack([table[rows].mean(0) for rows in replicates(runs)])


def _bootstrap_variance(numerators: np.ndarray, tokens: np.ndarray, draws: int, seed: int) -> float:
    """Variance of ``sum(numerators) / sum(tokens)`` over utterances drawn with replacement."""
    if draws < 2 or len(tokens) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, draws, 256):  # (chunk, U) indices at a time: bounded memory
        idx = rng.integers(0, len(tokens), size=(min(256, draws - start), len(tokens)))
        values.append(numerators[idx].sum(1) / np.maximum(tokens[idx].sum(1), 1.0))
    return float(np.concatenate(values).var(ddof=1))


def interaction(counts: ErrorCounts) -> float:
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


def estimate(
    a: ErrorCounts,
    b: ErrorCounts | None = None,
    confidence: float = 0.95,
    draws: int = 2000,
    seed: int = 0,
) -> dict:
    """The error rate of ``a``, or with ``b`` the paired difference ``a - b``, with its interval.

    Returns:
        ``value``, ``low``, ``high`` (None without an interval), ``half_width``, ``dof``, the
        variance's parts ``var_seeds`` and ``var_utterances``, the replicates of each side,
        and (for a difference) the ``verdict``.

    Raises:
        ValueError: ``a`` and ``b`` were scored on other utterances or references.
    """
    from scipy.stats import t as student_t

    sides = [(1.0, a)] if b is None else [(1.0, a), (-1.0, b)]
    if b is not None and (a.ids != b.ids or not np.array_equal(a.tokens, b.tokens)):
        raise ValueError("the two models were scored on other utterances or references: a "
                         "paired comparison needs the same test set")  # fmt: skip
    value = sum(w * float(c.rates.mean()) for w, c in sides)
    seed_parts = [float(c.rates.var(ddof=1)) / len(c.rates) if len(c.rates) > 1 else math.nan
                  for _, c in sides]  # fmt: skip
    per_utterance = sum(w * c.errors.mean(0) for w, c in sides)
    bootstrapped = _bootstrap_variance(per_utterance, a.tokens.astype(np.float64), draws, seed)
    held_twice = sum(interaction(c) / len(c.rates) for _, c in sides)
    var_utt = max(bootstrapped - held_twice, 0.0)
    out = {
        "value": round(value, 6),
        "replicates": [len(c.rates) for _, c in sides],
        "utterances": len(a.ids),
    }
    var = sum(seed_parts) + var_utt
    if math.isnan(var) or var < 1e-18:  # one replicate (no seed variance), or nothing varies
        out.update(low=None, high=None, half_width=None, dof=None, var_seeds=None,
                   var_utterances=var_utt)  # fmt: skip
    else:
        # Welch-Satterthwaite: each part's share of the variance, over its degrees of freedom
        parts = [(p, len(c.rates) - 1) for p, (_, c) in zip(seed_parts, sides, strict=True)]
        parts.append((var_utt, len(a.ids) - 1))
        dof = var * var / sum(p * p / k for p, k in parts if k > 0 and p > 0)
        half = float(student_t.ppf(0.5 + confidence / 2, dof)) * math.sqrt(var)
        out.update(low=round(value - half, 6), high=round(value + half, 6),
                   half_width=round(half, 6), dof=round(dof, 2),
                   var_seeds=sum(seed_parts), var_utterances=var_utt)  # fmt: skip
    if b is not None:
        out["verdict"] = verdict(out["low"], out["high"])
    return out


def verdict(low: float | None, high: float | None) -> str:
    """``better`` when the interval of ``a - b`` (error rates) is below 0, ``worse`` when above,
    ``not resolved`` when it holds 0 or there is none."""
    if low is None or high is None:
        return "not resolved"
    if high < 0:
        return "better"
    if low > 0:
        return "worse"
    return "not resolved"
