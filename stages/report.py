"""Stage `report`: gather the per-model evaluations into ``metrics.json``, ``report.md``,
``report.png`` (WER against size) and ``curves.png`` (the students' training curves)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.errors import ManifestError
from pipeline.core.io import write_json
from pipeline.evaluation.report import gather, write_report
from pipeline.evaluation.scoring import EvaluateConfig

METRICS = "metrics.json"


def run(
    cfg: EvaluateConfig,
    names: list[str],
    models_dir: Path,
    curves: dict[str, list[dict]],
    out: Path,
) -> dict:
    """Gather ``models_dir/<name>.json`` for ``names`` (in report order) and the students'
    training ``curves`` (name -> logged points) into the report in ``out``.

    Raises:
        ManifestError: a model's metrics are missing (its evaluation stage has not run).
    """
    missing = [n for n in names if not (models_dir / f"{n}.json").is_file()]
    if missing:
        raise ManifestError(f"{models_dir / (missing[0] + '.json')}: missing; run its evaluation "
                            "stage first (dvc repro)")  # fmt: skip
    models = {n: json.loads((models_dir / f"{n}.json").read_text()) for n in names}
    metrics = gather(models, cfg.probe.describe(), list(cfg.splits))
    write_json(out / METRICS, metrics)
    write_report(metrics, {n: c for n, c in curves.items() if c}, out)
    return metrics
