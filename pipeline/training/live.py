"""Training curves through dvclive, DVC's own logger: the one record of every logged point.

A training run writes one dvclive folder: ``metrics.json`` (the latest value of each term, the
step, and at the end the run's figures) and ``plots/metrics/<term>.tsv`` (every logged point),
which ``dvc exp show``, ``dvc plots`` and DVC's VS Code extension read while the run goes on.
Each model of the run logs under its label: a sweep's students under their names
(``plots/metrics/<name>/loss.tsv``, ``{"<name>": {"loss": ...}}``), a student's training seeds
under ``seed<k>`` (``dkd_b1/seed3`` in a sweep), and the one model of a one-seed student
unlabelled (``plots/metrics/loss.tsv``, ``{"loss": ...}``).

The folder is rewritten from the checkpointed curve when a killed run resumes, so it never
holds points that were logged after the checkpoint and are computed again.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

PLOTS = Path("plots") / "metrics"  # dvclive's layout inside its folder
SUMMARY = "metrics.json"


class TrainingLog:
    """The dvclive folder ``folder`` of one training run over the models of ``labels`` (each
    model's key, e.g. ``(student, seed)``, -> its label: see above; "" for the one model of a
    run that trains one)."""

    def __init__(self, folder: Path, labels: dict) -> None:
        from dvclive import Live

        class DeclaredLive(Live):
            def _init_dvc(self) -> None:
                """Nothing: dvc.yaml declares these files as the stage's metrics and plots, so
                dvclive's own DVC integration (saving experiments, writing dvc.yaml) has no
                work; it would open the git repository around the folder (failing in one
                without commits) or even `dvc init` one that is not DVC's."""

        logging.getLogger("dvclive").setLevel(logging.WARNING)
        folder.mkdir(parents=True, exist_ok=True)
        # resume=False: a fresh folder (a resumed run replays its checkpointed curve into it);
        # no dvc.yaml or report of its own (dvc.yaml declares the files), no experiment saved
        self._live = DeclaredLive(str(folder), resume=False, report=None, save_dvc_exp=False,
                                  dvcyaml=None)  # fmt: skip
        (folder / PLOTS).mkdir(parents=True, exist_ok=True)  # there even before a first point
        if len(labels) > 1 and not all(labels.values()):
            raise ValueError("a training log of several models holds each under a label")
        self.labels = labels
        self._prefix = {n: f"{n}/" if n else "" for n in labels.values()}
        self._step = 0

    def log(self, name: str, point: dict) -> None:
        """One curve point ``{"step": s, term: value, ...}`` of the model labelled ``name``."""
        self._step = self._live.step = point["step"]
        for term, value in point.items():
            if term != "step":
                self._live.log_metric(f"{self._prefix[name]}{term}", value)

    def flush(self) -> None:
        """Write the summary, and tell DVC (and its VS Code extension) a step is done."""
        self._live.next_step()

    def finish(self, figures: dict, shared: dict) -> None:
        """End the run: each model's ``figures`` (by its key) and the ``shared`` ones (time,
        throughput) join the latest values in the summary."""
        summary = self._live.summary
        for key, values in figures.items():
            target = summary
            for part in filter(None, self.labels[key].split("/")):
                target = target.setdefault(part, {})
            target.update(values)
        summary.update(shared)
        self._live.step = self._step  # next_step() counted one past the last point
        self._live.end()


def read_curve(folder: Path, name: str = "") -> list[dict]:
    """The points dvclive logged in ``folder`` (for the model labelled ``name``):
    ``[{"step": s, term: value, ...}]`` in step order; ``[]`` if there are none."""
    root = Path(folder) / PLOTS / name
    points: dict[int, dict] = {}
    for tsv in sorted(root.glob("*.tsv")):
        with open(tsv, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                step = int(row["step"])
                points.setdefault(step, {"step": step})[tsv.stem] = float(row[tsv.stem])
    return [points[s] for s in sorted(points)]


def read_curves(folder: Path, name: str = "") -> dict[str, list[dict]]:
    """The curves of every training seed of the student ``name`` of ``folder`` (its own log:
    ""): ``{label: points}``, one entry for a one-seed student, one per ``seed<k>`` otherwise;
    ``{}`` if there are none."""
    root = Path(folder) / PLOTS / name
    curves = {name: read_curve(folder, name)} if any(root.glob("*.tsv")) else {}
    found = [p.name for p in root.glob("seed*") if p.is_dir()] if root.is_dir() else []
    seeds = sorted(found, key=_seed_order)
    for seed in seeds:
        curves[f"{name}/{seed}" if name else seed] = read_curve(folder, f"{name}/{seed}" if name
                                                                else seed)  # fmt: skip
    return curves


def _seed_order(label: str) -> tuple[int, str]:
    """``seed2`` before ``seed10``: by the seed's number, then as text."""
    digits = label.removeprefix("seed")
    return (int(digits) if digits.isdigit() else -1, label)
