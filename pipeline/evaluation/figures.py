"""The report's figures: each model's rates with their intervals beside the declared
comparisons (``report.png``), and the students' training curves (``curves.png``)."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.core.io import atomic_file
from pipeline.evaluation.report import COMPARED, RATES

VERDICT_COLORS = {"better": "tab:green", "worse": "tab:red", "not resolved": "0.45"}
KIND_COLORS = {"teacher": "tab:red", "student": "tab:blue", "baseline": "tab:gray"}


def plot(metrics: dict, path: Path) -> None:
    """On the first scored split: each model's PER and WER with their intervals (a row per
    model, labelled with its size), and each declared comparison's differences with their
    intervals, coloured by verdict; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = metrics["splits"][0]
    models = metrics["models"]
    pairs = metrics["comparisons"]
    panels = [(m, t) for m, t in RATES[:2]
              if any(m in r["splits"][split] for r in models.values())]  # fmt: skip
    rows = max(len(models), len(pairs), 1)
    fig, axes = plt.subplots(1, len(panels) + (1 if pairs else 0),
                             figsize=(4.2 * (len(panels) + (1.3 if pairs else 0)),
                                      1.2 + 0.32 * rows), dpi=120, squeeze=False)  # fmt: skip
    names = list(models)
    labels = [f"{n} ({models[n]['parameters'] / 1e6:.2f}M)" for n in names]
    for ax, (metric, title) in zip(axes[0], panels, strict=False):
        for y, name in enumerate(names):
            value = models[name]["splits"][split].get(metric)
            if not value:
                continue
            x = 100 * value["mean"]
            low, high = value.get("low"), value.get("high")
            err = _bars(x, low, high)
            ax.errorbar(x, y, xerr=err, fmt="o", capsize=3,
                        color=KIND_COLORS.get(models[name]["kind"], "black"))  # fmt: skip
        ax.set_yticks(range(len(names)), labels, fontsize=8)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_xlabel(f"{title} (%), mean and {round(100 * metrics['confidence'])}% interval",
                      fontsize=8)  # fmt: skip
        ax.set_title(f"{title} ({split})", fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    if pairs:
        ax = axes[0][-1]
        ticks = []
        for y, (pair, per_split) in enumerate(pairs.items()):
            for k, metric in enumerate(COMPARED):
                d = per_split[split].get(metric)
                if not d:
                    continue
                offset = y + (k - 0.5) * 0.3
                x = 100 * d["diff"]
                err = _bars(x, d["low"], d["high"])
                ax.errorbar(x, offset, xerr=err, fmt="os"[k], capsize=3,
                            color=VERDICT_COLORS[d["verdict"]])  # fmt: skip
            ticks.append(pair)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(ticks)), ticks, fontsize=8)
        ax.set_ylim(len(ticks) - 0.5, -0.5)
        ax.set_xlabel("A - B (points): green A better, red A worse, grey not resolved",
                      fontsize=8)  # fmt: skip
        ax.set_title(f"comparisons ({split}): PER o, WER s", fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    _save(fig, path)


def _bars(x: float, low: float | None, high: float | None) -> list | None:
    """Error bars around ``x`` (percent) reaching ``low`` and ``high`` (fractions)."""
    if low is None:
        return None
    return [[max(0.0, x - 100 * low)], [max(0.0, 100 * high - x)]]


def plot_curves(curves: dict[str, dict[str, list[dict]]], path: Path) -> None:
    """Each student's training loss against steps, one small panel each (own scale), a line per
    training seed, so it is visible whether training had flattened."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(curves)
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols) if names else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), dpi=110, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for points in curves[name].values():
            ax.plot([p["step"] for p in points], [p["loss"] for p in points], color="tab:blue",
                    alpha=0.7, lw=1)  # fmt: skip
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("training loss of each student (a line per training seed)", fontsize=10)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
