"""Stage `report`: gather the per-model evaluations into ``metrics.json`` (with every model's
intervals and the declared comparisons), ``report.md``, ``report.png`` (rates and comparisons)
and ``curves.png`` (the students' training curves)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.errors import ManifestError
from pipeline.core.io import atomic_write_text, write_json
from pipeline.evaluation.figures import plot, plot_curves
from pipeline.evaluation.readout import markdown
from pipeline.evaluation.report import ReportConfig, gather
from pipeline.evaluation.scoring import EvaluateConfig

METRICS = "metrics.json"


def run(
    cfg: EvaluateConfig,
    report: ReportConfig,
    names: list[str],
    models_dir: Path,
    curves: dict[str, dict[str, list[dict]]],
    out: Path,
) -> dict:
    """Gather ``models_dir/<name>.json`` for ``names`` (in report order) and the students'
    training ``curves`` (name -> seed label -> logged points) into the report in ``out``.

    Raises:
        ManifestError: a model's metrics are missing (its evaluation stage has not run).
        ValueError: ``report.compare`` names a model that is not evaluated.
    """
    missing = [n for n in names if not (models_dir / f"{n}.json").is_file()]
    if missing:
        raise ManifestError(f"{models_dir / (missing[0] + '.json')}: missing; run its evaluation "
                            "stage first (dvc repro)")  # fmt: skip
    models = {n: json.loads((models_dir / f"{n}.json").read_text()) for n in names}
    metrics = gather(models, cfg.probe.describe(), list(cfg.splits), report)
    write_json(out / METRICS, metrics)
    atomic_write_text(out / "report.md", markdown(metrics))
    plot(metrics, out / "report.png")
    plot_curves({n: c for n, c in curves.items() if c}, out / "curves.png")
    return metrics
