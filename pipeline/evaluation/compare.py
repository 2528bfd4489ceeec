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
number (Welch's two-sample variance), and ``V_u`` the variance of ``D`` over a paired bootstrap
of the utterances (Bisani & Ney, ICASSP 2004: utterances drawn with replacement, the same ones
for both models, each model's errors averaged over its replicates). The interval is
``D +- t_nu sqrt(V)``, with Welch-Satterthwaite's degrees of freedom ``nu``: with three seeds a
side and seeds dominating, ``nu`` is near 4 and the interval wide, as it should be. The two
terms overlap a little (the seeds' spread on a finite test set holds some of the utterances'
noise), which errs on the wide side. A model with one replicate has no estimate of its seed
variance: its comparisons get no interval and stay not resolved.

The verdict: ``better`` (A's errors are lower) when the whole interval is below 0, ``worse``
when above, ``not resolved`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jiwer
import numpy as np

VERDICTS = ("better", "worse", "not resolved")


def edit_counts(refs: list[str], hyps: list[str], unit: str) -> tuple[list[int], list[int]]:
    """Each pair's edit errors (substitutions + deletions + insertions) and reference length,
    in ``words`` (space-separated tokens) or ``chars``, from jiwer's alignments: summed, they
    give jiwer's corpus WER or CER."""
    if not refs:
        return [], []
    process = jiwer.process_words if unit == "words" else jiwer.process_characters
    out = process(refs, hyps)
    errors, tokens = [], []
    for chunks, ref in zip(out.alignments, out.references, strict=True):
        errors.append(sum(c.hyp_end_idx - c.hyp_start_idx if c.type == "insert"
                          else c.ref_end_idx - c.ref_start_idx
                          for c in chunks if c.type != "equal"))  # fmt: skip
        tokens.append(len(ref))
    return errors, tokens


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
    var_utt = _bootstrap_variance(per_utterance, a.tokens.astype(np.float64), draws, seed)
    out = {
        "value": round(value, 6),
        "replicates": [len(c.rates) for _, c in sides],
        "utterances": len(a.ids),
    }
    if any(math.isnan(p) for p in seed_parts):
        out.update(low=None, high=None, half_width=None, dof=None, var_seeds=None,
                   var_utterances=var_utt)  # fmt: skip
    else:
        var = sum(seed_parts) + var_utt
        # Welch-Satterthwaite: each part's share of the variance, over its degrees of freedom
        parts = [(p, len(c.rates) - 1) for p, (_, c) in zip(seed_parts, sides, strict=True)]
        parts.append((var_utt, len(a.ids) - 1))
        denominator = sum(p * p / k for p, k in parts if k > 0 and p > 0)
        dof = var * var / denominator if denominator > 0 else math.inf
        half = float(student_t.ppf(0.5 + confidence / 2, dof)) * math.sqrt(var) if var else 0.0
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
