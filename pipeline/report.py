"""The evaluation report: a markdown table of every model and a WER-vs-parameters plot."""

from __future__ import annotations

from pathlib import Path

from pipeline.io import atomic_write_text

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

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"teacher": "tab:red", "student": "tab:blue", "baseline": "tab:gray"}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, row in metrics["models"].items():
        x = max(row["parameters"], 1) / 1e6
        ax.scatter(x, 100 * row["wer"], color=colors.get(row["kind"], "black"))
        ax.annotate(name, (x, 100 * row["wer"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_xlabel("parameters (millions, log scale; fbank plotted at 1e-6 M)")
    ax.set_ylabel("WER (%)")
    ax.set_title(f"ASR probe WER vs size ({metrics['split']} split)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_report(metrics: dict, out_dir: Path) -> None:
    atomic_write_text(Path(out_dir) / "report.md", markdown(metrics))
    plot(metrics, Path(out_dir) / "report.png")
