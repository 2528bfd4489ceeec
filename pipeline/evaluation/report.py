"""The evaluation report: every model's metrics gathered, a markdown table per scored split
(means over probe seeds with their range, differences within that range marked), a plot of
WER against parameters, and the students' training curves."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.core.io import atomic_file, atomic_write_text

PER_SPLIT = [
    ("wer", "WER", lambda v: f"{100 * v:.1f}%"),
    ("cer", "CER", lambda v: f"{100 * v:.1f}%"),
    ("per", "PER", lambda v: f"{100 * v:.1f}%"),
    ("top1_agreement", "top-1 agr.", lambda v: f"{100 * v:.1f}%"),
    ("kl", "KL(T, S)", lambda v: f"{v:.3f}"),
]
PER_MODEL = [
    ("parameters", "params", lambda v: f"{v / 1e6:.2f}M"),
    ("rtf", "RTF", lambda v: f"{v:.4f}"),
    ("rtf_vs_teacher", "RTF/teacher", lambda v: f"{v:.2f}x"),
    ("peak_memory_mb", "peak MB", lambda v: f"{v:.0f}"),
    ("stream_latency_ms", "streams", lambda v: f"{v:g} ms"),
]


def gather(models: dict[str, dict], probe: str, splits: list[str]) -> dict:
    """One metrics document from the per-model ones (in report order), with each model's RTF
    relative to the teacher's."""
    teacher_rtf = models.get("teacher", {}).get("rtf")
    for row in models.values():
        row["rtf_vs_teacher"] = round(row["rtf"] / teacher_rtf, 4) if teacher_rtf else None
    return {"splits": splits, "probe": probe, "models": models}


def _cell(value, fmt) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):  # over probe seeds: mean (min-max)
        if value["min"] == value["max"]:
            return fmt(value["mean"])
        return f"{fmt(value['mean'])} ({fmt(value['min'])}-{fmt(value['max'])})"
    return fmt(value)


def overlapping(models: dict[str, dict], split: str, name: str, key: str = "wer") -> list[str]:
    """The other models whose ``key`` range over probe seeds overlaps ``name``'s: differences
    the seeds cannot tell apart."""
    mine = models[name]["splits"][split].get(key)
    out = []
    for other, row in models.items():
        theirs = row["splits"][split].get(key)
        if other != name and mine and theirs:
            if mine["min"] <= theirs["max"] and theirs["min"] <= mine["max"]:
                out.append(other)
    return out


def markdown(metrics: dict) -> str:
    """A table per scored split (one row per model) and a legend naming the probe."""
    models = metrics["models"]
    lines = [
        "# Evaluation",
        "",
        f"Probe: {metrics['probe']}. A small probe on a small budget: read the WERs as a "
        "comparison between the rows, not as SUPERB numbers. Cells over probe seeds show the "
        "mean and, in brackets, the lowest and highest seed; the last column lists the models "
        "whose WER range overlaps the row's (a difference the seeds cannot tell apart). "
        "Agreement and KL: against the cached teacher on the split's frames. RTF and peak "
        "memory: one forward on the measurement audio. Streams: the latency of a student that "
        "runs on a live stream, chunk by chunk (`pipeline.export.streaming`); - for the rest.",
    ]
    header = ["model", "kind"] + [t for _, t, _ in PER_MODEL] + [t for _, t, _ in PER_SPLIT]
    for split in metrics["splits"]:
        lines += ["", f"## {split}", "", "| " + " | ".join([*header, "WER within spread of"])
                  + " |", "|" + "---|" * (len(header) + 1)]  # fmt: skip
        for name, row in models.items():
            scores = row["splits"][split]
            cells = [name, row["kind"]]
            cells += [_cell(row.get(key), fmt) for key, _, fmt in PER_MODEL]
            cells += [_cell(scores.get(key), fmt) for key, _, fmt in PER_SPLIT]
            cells.append(", ".join(overlapping(models, split, name)) or "-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(metrics: dict, path: Path) -> None:
    """WER on the first scored split against parameters, one labelled point per model (with
    its seed range), written atomically as PNG."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = metrics["splits"][0]
    colors = {"teacher": "tab:red", "student": "tab:blue", "baseline": "tab:gray"}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    models = metrics["models"]
    wer = {n: r["splits"][split]["wer"] for n, r in models.items()}
    gap = 0.035 * (
        max(100 * w["max"] for w in wer.values()) - min(100 * w["min"] for w in wer.values()) + 10
    )
    groups: dict[float, list[str]] = {}  # models of (about) one size share a label column
    for name, row in models.items():
        if row["parameters"] > 0:
            groups.setdefault(round(math.log10(row["parameters"]), 2), []).append(name)
    for names in groups.values():
        last = -math.inf
        for name in sorted(names, key=lambda n: wer[n]["mean"]):
            x, w = models[name]["parameters"] / 1e6, wer[name]
            y = 100 * w["mean"]
            ax.errorbar(
                x,
                y,
                yerr=[[y - 100 * w["min"]], [100 * w["max"] - y]],
                fmt="o",
                color=colors.get(models[name]["kind"], "black"),
                capsize=3,
                zorder=3,
            )
            last = max(y, last + gap)
            ax.annotate(
                name,
                (x, y),
                xytext=(x * 1.08, last),
                fontsize=8,
                va="center",
                arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5},
            )
    for name, row in models.items():
        if row["parameters"] == 0:  # no parameters (log-mel features): a reference line
            ax.axhline(100 * wer[name]["mean"], color=colors["baseline"], linestyle="--", lw=1)
            ax.annotate(
                f"{name} (no parameters)",
                (0.01, 100 * wer[name]["mean"]),
                xytext=(0, 3),
                xycoords=("axes fraction", "data"),
                textcoords="offset points",
                fontsize=8,
                color=colors["baseline"],
            )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.margins(x=0.25)
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("WER (%), mean and range over probe seeds")
    ax.set_title(f"ASR probe WER vs size ({split})")
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def plot_curves(curves: dict[str, list[dict]], path: Path) -> None:
    """Each student's training loss against steps, one small panel each (own scale), so it is
    visible whether training had flattened."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(curves)
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols) if names else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), dpi=110, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        points = curves[name]
        ax.plot([p["step"] for p in points], [p["loss"] for p in points], color="tab:blue")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("training loss of each student", fontsize=10)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def write_report(metrics: dict, curves: dict[str, list[dict]], out_dir: Path) -> None:
    """``report.md``, ``report.png`` and ``curves.png`` in ``out_dir``."""
    atomic_write_text(Path(out_dir) / "report.md", markdown(metrics))
    plot(metrics, Path(out_dir) / "report.png")
    plot_curves(curves, Path(out_dir) / "curves.png")
