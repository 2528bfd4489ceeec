"""Error rates with intervals, and comparisons of two models, counting every source of
variance: the model's replicate runs (training seeds, with their probe seeds) and the sampling
of the test utterances.

A model's error rate (WER, CER, PER) on a split is a sample. For run ``r`` (one training seed
and one probe seed) and utterance ``u``, ``e[r, u]`` edit errors against ``n[u]`` reference
tokens; run ``r`` scores ``R[r] = sum_u e[r, u] / sum_u n[u]``. A **replicate** is what another
training of the model would redraw: the runs of one training seed (their probe seeds
averaged), or, for a model not trained here (the teacher, a baseline), each probe seed. The
model's rate is the mean over its replicates.

A comparison of two models A - B on the same utterances has one of two **designs**, fixed by
how the models were trained, never by their results:

- **paired by seed**: both are students of the same architecture, trained with the same
  training seeds, where a seed fixes a replicate's initial weights and its batch order (their
  ``pairing`` fingerprints agree). Seed ``k`` of A and seed ``k`` of B then start alike and
  see the same batches (common random numbers), so what the seed does to both cancels in
  their difference. The estimate is that of one model whose replicates are the per-seed
  differences ``e_A[k, u] - e_B[k, u]``: ``V = s_d^2 / m + V_u`` with ``m - 1`` degrees of
  freedom for the seed part.
- **unpaired**: the rest (other architectures, other seeds, a model not trained here).
  ``V = s_A^2 / m_A + s_B^2 / m_B + V_u``, the spread between each model's replicates over
  their number, as in Welch's test.

In both, ``V_u`` is what the sampling of the test utterances adds: the variance of ``D`` over a
paired bootstrap of the utterances (Bisani & Ney, ICASSP 2004: utterances drawn with
replacement, the same ones for both models, each model's errors averaged over its replicates),
less the part of it that the replicates' spread already holds. That part is the replicate x
utterance interaction (which utterances each replicate gets wrong): it is in the replicates'
spread on a finite test set and, averaged over the ``m`` replicates, in the bootstrapped errors
too; counted twice, it would widen the interval (by up to 1.4x where it is all the variance
there is). It is estimated from the residuals of an additive fit (utterance + replicate shift)
and taken out of the bootstrap's variance once. The interval is ``D +- t_nu sqrt(V)``, with
Welch-Satterthwaite's degrees of freedom ``nu`` over the parts: where the seeds dominate, ``nu``
is near ``m - 1`` paired and between ``min(m_A, m_B) - 1`` and ``m_A + m_B - 2`` unpaired (three
seeds a side: 2 to 4, about 2 when one side's spread dominates). A model with one replicate
has no estimate of its seed variance: its comparisons get no interval and stay not resolved.
Each verdict stands alone: a report of many pairs and rates is not corrected for their number
(at 95%, about one verdict in twenty where nothing differs may still come out better or worse).

The verdict: ``better`` (A's errors are lower) when the whole interval is below 0, ``worse``
when above, ``not resolved`` otherwise. An unresolved comparison says what would resolve it:
the replicates a side that its measured spread needs for a half-width below the difference it
observed, and below 1 point (:func:`seeds_needed`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from pipeline.evaluation.variance import Spread, bootstrap_variance, interaction, seeds_needed

PAIRED, UNPAIRED = "paired by seed", "unpaired"
ONE_POINT = 0.01  # a difference of 1 point of error rate


@dataclass(frozen=True)
class ErrorCounts:
    """One model's errors on one split for one metric.

    Attributes:
        ids: the utterances, ``(U,)``.
        tokens: reference tokens (words, characters or phonemes) of each utterance, ``(U,)``.
        errors: edit errors (substitutions + deletions + insertions), ``(M, U)``: one row per
            replicate (a training seed's runs averaged over its probe seeds).
        seeds: each replicate's training seed (None for a model not trained here); empty when
            unknown.
        pairing: what a replicate's training seed fixes (architecture, initialisation, batch
            order), as a fingerprint: two models with the same one and the same seeds are
            compared seed by seed; "" never pairs.
    """

    ids: tuple[str, ...]
    tokens: np.ndarray
    errors: np.ndarray
    seeds: tuple[int | None, ...] = ()
    pairing: str = ""

    def __post_init__(self) -> None:
        if self.errors.ndim != 2 or not self.errors.shape[1] == len(self.ids) == len(self.tokens):
            raise ValueError(f"errors {self.errors.shape} do not match {len(self.ids)} utterances")
        if self.seeds and len(self.seeds) != len(self.errors):
            raise ValueError(f"{len(self.seeds)} seeds for {len(self.errors)} replicates")

    @property
    def rates(self) -> np.ndarray:
        """Each replicate's error rate, ``(M,)``."""
        return self.errors.sum(1) / max(float(self.tokens.sum()), 1.0)

    def by_seed(self, seeds: tuple[int, ...]) -> np.ndarray:
        """The replicates' errors in the order of ``seeds``, ``(M, U)``."""
        row = {s: i for i, s in enumerate(self.seeds)}
        return self.errors[[row[s] for s in seeds]]

    def select(self, seeds: tuple[int, ...]) -> ErrorCounts:
        """The counts of the replicates of ``seeds`` only, in that order."""
        return dataclasses.replace(self, errors=self.by_seed(seeds), seeds=tuple(seeds))


def replicates(runs: list[dict]) -> dict[object, list[int]]:
    """The runs of each replicate of a model, by its key (indices into ``runs``, each run a
    ``{"train_seed": int | None, "probe_seed": int}``): the runs of one training seed are one
    replicate, keyed by the seed; runs without a training seed (a model not trained here) are
    each their own, keyed ``("probe", index)``."""
    groups: dict[object, list[int]] = {}
    for i, run in enumerate(runs):
        key = run["train_seed"] if run.get("train_seed") is not None else ("probe", i)
        groups.setdefault(key, []).append(i)
    return groups


def replicate_errors(runs: list[dict], errors: list[list[float]]) -> np.ndarray:
    """Each run's per-utterance errors averaged within its replicate, ``(M, U)``."""
    table = np.asarray(errors, dtype=np.float64)
    return np.stack([table[rows].mean(0) for rows in replicates(runs).values()])


def replicate_seeds(runs: list[dict]) -> tuple[int | None, ...]:
    """Each replicate's training seed (None for a model not trained here), in the order of
    :func:`replicate_errors`."""
    return tuple(k if isinstance(k, int) else None for k in replicates(runs))


def design(a: ErrorCounts, b: ErrorCounts) -> str:
    """:data:`PAIRED` when ``a`` and ``b`` share their pairing fingerprint and their training
    seeds (at least two), else :data:`UNPAIRED`."""
    seeds = set(a.seeds)
    if (a.pairing and a.pairing == b.pairing and None not in seeds and len(seeds) >= 2
            and len(seeds) == len(a.seeds) and sorted(a.seeds) == sorted(b.seeds)):  # fmt: skip
        return PAIRED
    return UNPAIRED


@dataclass(frozen=True)
class Estimate:
    """A model's rate, or the difference of two models' rates, with its interval.

    Attributes:
        value: the rate (or ``a - b``).
        low, high, half_width, dof: the interval and its degrees of freedom (None without one).
        var_seeds, var_utterances: the variance's parts (the seeds' None without an interval).
        replicates: each side's replicates.
        utterances: the test utterances.
        design: :data:`PAIRED` or :data:`UNPAIRED` for a difference; None for a rate.
        verdict: ``better``, ``worse`` or ``not resolved`` for a difference; None for a rate.
        seeds_needed: for an unresolved difference with a measured spread, the replicates a
            side that would resolve a difference of its observed size (``its_size``) and of 1
            point (``one_point``), each None where seeds alone cannot (:func:`seeds_needed`).
    """

    value: float
    low: float | None
    high: float | None
    half_width: float | None
    dof: float | None
    var_seeds: float | None
    var_utterances: float
    replicates: list[int]
    utterances: int
    design: str | None = None
    verdict: str | None = None
    seeds_needed: dict[str, int | None] | None = None

    def to_dict(self) -> dict:
        """The estimate as JSON values, rounded (rates to 6 decimals)."""
        out = {k: getattr(self, k) for k in ("value", "low", "high", "half_width")}
        out = {k: None if v is None else round(v, 6) for k, v in out.items()}
        out.update(dof=None if self.dof is None else round(self.dof, 2),
                   var_seeds=self.var_seeds, var_utterances=self.var_utterances,
                   replicates=self.replicates, utterances=self.utterances)  # fmt: skip
        if self.design is not None:
            out.update(design=self.design, verdict=self.verdict, seeds_needed=self.seeds_needed)
        return out


def estimate(
    a: ErrorCounts,
    b: ErrorCounts | None = None,
    confidence: float = 0.95,
    draws: int = 2000,
    seed: int = 0,
) -> Estimate:
    """The error rate of ``a``, or with ``b`` the difference ``a - b`` paired by utterance (and
    by seed where :func:`design` says so), with its interval.

    Raises:
        ValueError: ``a`` and ``b`` were scored on other utterances or references.
    """
    if b is not None and (a.ids != b.ids or not np.array_equal(a.tokens, b.tokens)):
        raise ValueError("the two models were scored on other utterances or references: a "
                         "paired comparison needs the same test set")  # fmt: skip
    plan = UNPAIRED if b is None else design(a, b)
    if plan == PAIRED:
        seeds = tuple(a.seeds)
        sides = [(1.0, ErrorCounts(a.ids, a.tokens, a.errors - b.by_seed(seeds), seeds))]
    else:
        sides = [(1.0, a)] if b is None else [(1.0, a), (-1.0, b)]
    value = sum(w * float(c.rates.mean()) for w, c in sides)
    per_utterance = sum(w * c.errors.mean(0) for w, c in sides)
    bootstrapped = bootstrap_variance(per_utterance, a.tokens.astype(np.float64), draws, seed)
    held_twice = sum(interaction(c) / len(c.rates) for _, c in sides)
    spread = Spread(
        sides=tuple((float(c.rates.var(ddof=1)) if len(c.rates) > 1 else None, len(c.rates))
                    for _, c in sides),
        utterances=max(bootstrapped - held_twice, 0.0),
        n_utterances=len(a.ids),
    )  # fmt: skip
    interval = spread.half_width(confidence)
    half, dof = interval if interval is not None else (None, None)
    low, high = (None, None) if half is None else (value - half, value + half)
    out = Estimate(
        value=value, low=low, high=high, half_width=half, dof=dof,
        var_seeds=None if half is None else sum(p for p, _ in spread.parts()[:-1]),
        var_utterances=spread.utterances,
        replicates=[len(a.rates)] + ([] if b is None else [len(b.rates)]),
        utterances=len(a.ids),
    )  # fmt: skip
    if b is None:
        return out
    decided = verdict(low, high)
    needed = None
    if decided == "not resolved" and interval is not None:
        needed = {"its_size": seeds_needed(spread, abs(value), confidence),
                  "one_point": seeds_needed(spread, ONE_POINT, confidence)}  # fmt: skip
    return dataclasses.replace(out, design=plan, verdict=decided, seeds_needed=needed)


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
