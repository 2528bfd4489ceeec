"""The evaluation report: every model's metrics gathered with intervals, and the declared
comparisons with their designs and verdicts (the text: :mod:`pipeline.evaluation.readout`;
the figures: :mod:`pipeline.evaluation.figures`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.config import check
from pipeline.evaluation.compare import (
    ErrorCounts,
    estimate,
    replicate_errors,
    replicate_seeds,
    replicates,
)

RATES = (("per", "PER"), ("wer", "WER"), ("cer", "CER"))
COMPARED = ("per", "wer")  # the rates each declared pair is compared on


@dataclass(frozen=True)
class ReportConfig:
    """The ``report`` section of params.yaml.

    Attributes:
        compare: pairs ``[a, b]`` of evaluated models: each report gives ``a``'s error rates
            minus ``b``'s (PER, WER) on every scored split, with an interval and a verdict
            (:mod:`pipeline.evaluation.compare`).
        confidence: of every interval (0.95: 95%).
        bootstrap: draws of the paired bootstrap over utterances.
    """

    compare: list[list[str]] = field(default_factory=list)
    confidence: float = 0.95
    bootstrap: int = 2000

    def __post_init__(self) -> None:
        for pair in self.compare:
            check(len(pair) == 2 and pair[0] != pair[1], "compare",
                  f"each entry is two different models [a, b], got {pair}")  # fmt: skip
        check(0 < self.confidence < 1, "confidence", f"must be in (0, 1), got {self.confidence}")
        check(self.bootstrap >= 100, "bootstrap", f"must be >= 100, got {self.bootstrap}")


def metric_runs(model: dict, metric: str) -> list[dict]:
    """The runs of a model (its evaluation json) that scored ``metric``: each run lists its
    ``metrics`` (a student's ASR probe may run on some of its training seeds only); a run
    without the list scored them all."""
    return [run for run in model["runs"] if metric in run.get("metrics", (metric,))]


def error_counts(model: dict, split: str, metric: str) -> ErrorCounts | None:
    """One model's per-utterance errors on ``split`` for ``metric`` (its evaluation json), by
    replicate, with each replicate's training seed and the model's pairing fingerprint; None
    if it was not scored on it."""
    utts = model.get("utterances", {}).get(split)
    if not utts or metric not in utts["errors"]:
        return None
    runs = metric_runs(model, metric)
    return ErrorCounts(tuple(utts["ids"]), np.asarray(utts["tokens"][metric]),
                       replicate_errors(runs, utts["errors"][metric]), replicate_seeds(runs),
                       model.get("pairing") or "")  # fmt: skip


def compare_models(a: dict, b: dict, split: str, metric: str, cfg: ReportConfig) -> dict | None:
    """``a - b`` on ``split`` for ``metric``, paired by utterance (and by seed where the design
    allows): ``diff``, its interval ``low``, ``high`` and ``half_width`` (None without one),
    ``verdict``, ``design``, ``dof``, the ``replicates`` of each side, the ``utterances``, and
    for an unresolved one the ``seeds_needed`` to resolve it; None if either was not scored on
    it."""
    counts = error_counts(a, split, metric), error_counts(b, split, metric)
    if None in counts:
        return None
    result = estimate(*counts, confidence=cfg.confidence, draws=cfg.bootstrap).to_dict()
    keep = ("low", "high", "half_width", "verdict", "design", "dof", "replicates", "utterances",
            "seeds_needed")  # fmt: skip
    return {"diff": result["value"], **{k: result[k] for k in keep}}


def gather(models: dict[str, dict], probe: str, splits: list[str], cfg: ReportConfig) -> dict:
    """One metrics document from the per-model ones (in report order): each model's rates with
    their intervals (the per-utterance counts left out), its RTF relative to the teacher's,
    and each declared comparison on each split.

    Raises:
        ValueError: a declared pair names a model that is not evaluated.
    """
    unknown = sorted({n for pair in cfg.compare for n in pair} - set(models))
    if unknown:
        raise ValueError(f"report.compare names {unknown[0]!r}, which is not an evaluated model "
                         f"({', '.join(models)})")  # fmt: skip
    teacher_rtf = models.get("teacher", {}).get("rtf")
    gathered = {}
    for name, model in models.items():
        row = copy.deepcopy({k: v for k, v in model.items() if k != "utterances"})
        row["rtf_vs_teacher"] = round(row["rtf"] / teacher_rtf, 4) if teacher_rtf else None
        row["replicates"] = len(replicates(model["runs"]))
        row["splits"] = {split: row["splits"][split] for split in splits}
        for split in splits:
            for metric, _ in RATES:
                counts = error_counts(model, split, metric)
                if counts is not None:
                    interval = estimate(counts, confidence=cfg.confidence, draws=cfg.bootstrap)
                    low, high = (None if v is None else round(v, 6)
                                 for v in (interval.low, interval.high))  # fmt: skip
                    row["splits"][split][metric].update(low=low, high=high,
                                                        replicates=len(counts.rates))  # fmt: skip
        gathered[name] = row
    comparisons = {}
    for a, b in cfg.compare:
        per_split = {}
        for split in splits:
            results = {m: compare_models(models[a], models[b], split, m, cfg) for m in COMPARED}
            per_split[split] = {m: r for m, r in results.items() if r is not None}
        comparisons[f"{a} vs {b}"] = per_split
    return {"splits": splits, "probe": probe, "confidence": cfg.confidence, "models": gathered,
            "comparisons": comparisons}  # fmt: skip
