"""The report's words: the markdown tables of every model and comparison per scored split,
the lines of the report stage and of `pipeline compare`, each comparison's difference with
its interval, verdict and design, and what would resolve it."""

from __future__ import annotations

from pipeline.core.errors import ConfigError
from pipeline.evaluation.compare import PAIRED
from pipeline.evaluation.report import COMPARED, RATES, ReportConfig, compare_models

PER_SPLIT = [
    ("top1_agreement", "top-1 agr.", lambda v: f"{100 * v:.1f}%"),
    ("kl", "KL(T, S)", lambda v: f"{v:.3f}"),
]
PER_MODEL = [
    ("parameters", "params", lambda v: f"{v / 1e6:.2f}M"),
    ("rtf_vs_teacher", "RTF/teacher", lambda v: f"{v:.2f}x"),
    ("peak_memory_mb", "peak MB", lambda v: f"{v:.0f}"),
    ("stream_latency_ms", "streams", lambda v: f"{v:g} ms"),
]


def _percent(v: float) -> str:
    return f"{100 * v:.1f}%"


def _rate_cell(value: dict | None, replicates: int) -> str:
    """``mean [low, high]`` in percent; the mean alone where there is no interval; and the
    replicates behind it where they are fewer than the model's (``(1 seed)``: a student's ASR
    probe on its first seed only)."""
    if not value:
        return "-"
    cell = _percent(value["mean"])
    if value.get("low") is not None:
        cell += f" [{100 * value['low']:.1f}, {100 * value['high']:.1f}]"
    own = value.get("replicates", replicates)
    return cell if own == replicates else f"{cell} ({own} seed{'s' if own > 1 else ''})"


def difference_text(d: dict | None) -> str:
    """A comparison in points: ``+1.2 [+0.3, +2.1] worse``, or ``+1.2 (no interval: one
    replicate) not resolved``."""
    if not d:
        return "-"
    if d["low"] is None:
        return f"{100 * d['diff']:+.1f} (no interval: one replicate) {d['verdict']}"
    return f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] {d['verdict']}"


def design_text(d: dict) -> str:
    """How a comparison was made: ``paired by seed (12 seeds)``, ``unpaired (12 vs 1)``."""
    m = d["replicates"]
    return f"{d['design']} ({m[0]} seeds)" if d["design"] == PAIRED else \
        f"{d['design']} ({m[0]} vs {m[1]} replicates)"  # fmt: skip


def needed_text(d: dict | None) -> str:
    """What would resolve an unresolved comparison, from its measured spread: ``31 seeds a side
    for its size, 12 for 1 point``; where the test utterances alone are wider than the
    difference, no number of seeds is enough and it says so; "" for a resolved one or one
    without a spread."""
    needed = (d or {}).get("seeds_needed")
    if not needed:
        return ""
    its, one = needed["its_size"], needed["one_point"]
    first = (f"{its:,} seeds a side for its size" if its is not None
             else "more test utterances for its size (no number of seeds is enough)")  # fmt: skip
    if one is None:
        return f"{first}, more test utterances for 1 point"
    return f"{first}, {one:,} {'for' if its is not None else 'seeds a side for'} 1 point"


def comparison_lines(metrics: dict) -> list[str]:
    """One line per declared comparison, split and rate: ``test dkd_b4 vs kd: PER -1.2 [...]
    not resolved (paired by seed (12 seeds); to resolve: ...)``."""
    lines = []
    for pair, per_split in metrics["comparisons"].items():
        for split in metrics["splits"]:
            for metric, d in per_split[split].items():
                needed = needed_text(d)
                lines.append(
                    f"{split} {pair}: {metric.upper()} {difference_text(d)} "
                    f"({design_text(d)}{f'; to resolve: {needed}' if needed else ''})"
                )
    return lines


def compare_lines(a: tuple[str, dict], b: tuple[str, dict], splits: list[str] | None,
                  cfg: ReportConfig) -> list[str]:  # fmt: skip
    """``pipeline compare``'s lines: A's rates minus B's (``(label, evaluation)`` each) on each
    of ``splits`` (default: every split both were scored on, in A's order), with its design,
    each side's rate and replicates, and what would resolve it.

    Raises:
        ConfigError: the two are the same evaluation (one model at one revision, however
            named: ``dkd_b4 dkd_b4``, ``dkd_b4@HEAD dkd_b4`` with the workspace at HEAD), a
            split that one of them was not scored on, or none in common.
    """
    if a[1] == b[1]:
        raise ConfigError(f"{a[0]} and {b[0]} are the same evaluation (model "
                          f"{a[1].get('name', a[0])!r}, the same results): compare two models, "
                          "or one model at two revisions")  # fmt: skip
    scored = [{s for s, u in side[1].get("utterances", {}).items() if u} for side in (a, b)]
    for split in splits or []:
        for (label, _), has in zip((a, b), scored, strict=True):
            if split not in has:
                raise ConfigError(f"--split {split}: {label} was not scored on it (scored: "
                                  f"{', '.join(sorted(has)) or 'none'})")  # fmt: skip
    wanted = splits or [s for s in a[1]["splits"] if s in scored[0] & scored[1]]
    if not wanted:
        raise ConfigError(f"{a[0]} and {b[0]} were scored on no split in common")
    lines = []
    for split in wanted:
        for metric, title in RATES:
            d = compare_models(a[1], b[1], split, metric, cfg)
            if d is None:
                continue
            rates = [side[1]["splits"][split][metric]["mean"] for side in (a, b)]
            needed = needed_text(d)
            lines.append(
                f"{split} {title}: {a[0]} - {b[0]} = {difference_text(d)} (points, "
                f"{round(100 * cfg.confidence)}%; {design_text(d)}; {100 * rates[0]:.2f}% vs "
                f"{100 * rates[1]:.2f}%; {d['utterances']} utterances)"
                + (f"; to resolve: {needed}" if needed else "")
            )
    return lines


def _cell(value, fmt) -> str:
    if value is None:
        return "-"
    return fmt(value["mean"] if isinstance(value, dict) else value)


def markdown(metrics: dict) -> str:
    """A table of models and a table of comparisons per scored split, and a legend."""
    models = metrics["models"]
    level = round(100 * metrics["confidence"])
    lines = [
        "# Evaluation",
        "",
        f"Probes: {metrics['probe']}. Small probes on a small budget: read the rates as a "
        "comparison between the rows, not as SUPERB numbers. Each rate is the mean over the "
        f"model's runs (training seeds x probe seeds) with its {level}% interval in brackets, "
        "which counts both the seeds and the sampling of the test utterances; `replicates` is "
        "the number of independent trainings behind it (a student's training seeds; the probe "
        "seeds of a model not trained here), and a rate with fewer says so (`(1 seed)`: the "
        "ASR probe on a student's first seed only). Agreement and KL: against the cached "
        "teacher on the split's frames, mean over training seeds. RTF and peak memory: one "
        "forward on the "
        "measurement audio. Streams: the latency of a student that runs on a live stream; - "
        "for the rest.",
        "",
        f"Comparisons: A vs B is A's error rate minus B's, in points, paired by utterance, and "
        "by seed where both are students of one architecture trained with the same seeds (seed "
        "k of each started alike and saw the same batches); else unpaired. Each has its "
        f"{level}% interval; **better** (A's errors are lower) or **worse** when the whole "
        "interval is on one side of 0, **not resolved** when it holds 0: the data cannot tell "
        "the two apart.",
    ]
    header = ["model", "kind", "replicates"] + [t for _, t, _ in PER_MODEL] + \
        [t for _, t in RATES] + [t for _, t, _ in PER_SPLIT]  # fmt: skip
    for split in metrics["splits"]:
        lines += ["", f"## {split}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]  # fmt: skip
        for name, row in models.items():
            scores = row["splits"][split]
            cells = [name, row["kind"], str(row["replicates"])]
            cells += [_cell(row.get(key), fmt) for key, _, fmt in PER_MODEL]
            cells += [_rate_cell(scores.get(key), row["replicates"]) for key, _ in RATES]
            cells += [_cell(scores.get(key), fmt) for key, _, fmt in PER_SPLIT]
            lines.append("| " + " | ".join(cells) + " |")
        if metrics["comparisons"]:
            lines += _comparison_table(metrics["comparisons"], split)
    return "\n".join(lines) + "\n"


def _comparison_table(comparisons: dict, split: str) -> list[str]:
    """The declared comparisons on ``split``: a row each (design, each rate's difference), then
    what would resolve those that are not resolved."""
    titles = [f"{dict(RATES)[m]} difference" for m in COMPARED]
    lines = ["", "| comparison | design | " + " | ".join(titles) + " |",
             "|---|---|" + "---|" * len(titles)]  # fmt: skip
    wanted = []
    for pair, per_split in comparisons.items():
        found = {m: per_split[split][m] for m in COMPARED if per_split[split].get(m)}
        designs = dict.fromkeys(design_text(d) for d in found.values())
        design = " / ".join(f"{m.upper()} {design_text(d)}" for m, d in found.items()) \
            if len(designs) > 1 else next(iter(designs), "-")  # fmt: skip
        cells = [difference_text(found.get(m)) for m in COMPARED]
        lines.append(f"| {pair} | {design} | " + " | ".join(cells) + " |")
        wanted += [f"- {pair}, {m.upper()}: {needed_text(d)}" for m, d in found.items()
                   if needed_text(d)]  # fmt: skip
    if wanted:
        lines += ["", "What would resolve the rest: the seeds a side that each comparison's "
                  "measured spread needs for an interval narrower than the difference it "
                  "observed, and than 1 point (none: the test utterances alone are too few).",
                  "", *wanted]  # fmt: skip
    return lines
