"""The evaluation report: a markdown table of every model and a WER-vs-parameters plot."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.core.io import atomic_file, atomic_write_text

COLUMNS = [
    ("parameters", "params", lambda v: f"{v / 1e6:.2f}M"),
    ("wer", "WER", lambda v: f"{100 * v:.1f}%"),
    ("cer", "CER", lambda v: f"{100 * v:.1f}%"),
    ("per", "PER", lambda v: f"{100 * v:.1f}%"),
    ("top1_agreement", "top-1 agr.", lambda v: f"{100 * v:.1f}%"),
    ("kl", "KL(T, S)", lambda v: f"{v:.3f}"),
    ("tckd", "TCKD", lambda v: f"{v:.3f}"),
    ("nckd", "NCKD", lambda v: f"{v:.3f}"),
    ("rtf", "RTF", lambda v: f"{v:.4f}"),
    ("rtf_vs_teacher", "RTF/teacher", lambda v: f"{v:.2f}x"),
    ("peak_memory_mb", "peak MB", lambda v: f"{v:.0f}"),
]


def markdown(metrics: dict) -> str:
    """A table with one row per model (teacher, baselines, students) and a short legend."""
    models = metrics["models"]
    header = ["model", "kind"] + [title for _, title, _ in COLUMNS]
    lines = [
        f"# Evaluation on the {metrics['split']} split",
        "",
        f"Teacher: {metrics['teacher']}. WER/CER/PER: frozen upstream, learnt layer weights, "
        "BiLSTM + CTC probe trained on the train split, greedy decoding. Agreement and KL: "
        "against the cached teacher on held-out frames. RTF and peak memory: one forward on "
        f"{metrics['efficiency_seconds']:g} s of audio ({metrics['device']}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, row in models.items():
        cells = [name, row["kind"]]
        cells += [fmt(row[key]) if row.get(key) is not None else "-" for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(metrics: dict, path: Path) -> None:
    """WER against parameters, one labelled point per model, written atomically as PNG."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"teacher": "tab:red", "student": "tab:blue", "baseline": "tab:gray"}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    sized = {n: r for n, r in metrics["models"].items() if r["parameters"] > 0}
    wers = [100 * r["wer"] for r in metrics["models"].values()]
    gap = 0.035 * (max(wers) - min(wers) + 10)  # label spacing in WER points
    groups: dict[float, list[str]] = {}  # models of (about) one size share a label column
    for name, row in sized.items():
        groups.setdefault(round(math.log10(row["parameters"]), 2), []).append(name)
    for names in groups.values():
        last = -math.inf
        for name in sorted(names, key=lambda n: sized[n]["wer"]):
            row = sized[name]
            x, y = row["parameters"] / 1e6, 100 * row["wer"]
            ax.scatter(x, y, color=colors.get(row["kind"], "black"), zorder=3)
            last = max(y, last + gap)
            ax.annotate(name, (x, y), xytext=(x * 1.08, last), fontsize=8, va="center",
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})  # fmt: skip
    for name, row in metrics["models"].items():
        if name not in sized:  # no parameters (log-mel features): a reference line
            ax.axhline(100 * row["wer"], color=colors["baseline"], linestyle="--", linewidth=1)
            ax.annotate(f"{name} (no parameters)", (0.01, 100 * row["wer"]), xytext=(0, 3),
                        xycoords=("axes fraction", "data"), textcoords="offset points",
                        fontsize=8, color=colors["baseline"])  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.margins(x=0.25)
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("WER (%)")
    ax.set_title(f"ASR probe WER vs size ({metrics['split']} split)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def write_report(metrics: dict, out_dir: Path) -> None:
    atomic_write_text(Path(out_dir) / "report.md", markdown(metrics))
    plot(metrics, Path(out_dir) / "report.png")
