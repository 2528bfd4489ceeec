"""The evaluation's commands: one per evaluated model (`evaluate-teacher`, `evaluate-baseline`,
`evaluate-student`, each its own DVC stage) and `report`, which gathers them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import typer

from cli.common import CACHE, MANIFEST, PARAMS, app, reported
from pipeline.core.config import from_dict, load_params, section

MODELS = Path("eval/models")


def _out(name: str, out: Path | None) -> Path:
    return out or MODELS / f"{name}.json"


def _teacher(raw: dict):
    from pipeline.teacher.config import TeacherConfig

    return from_dict(TeacherConfig, raw.get("cache_teacher", {}).get("teacher"),
                     where="cache_teacher.teacher")  # fmt: skip


@app.command("evaluate-teacher")
def evaluate_teacher_cmd(
    out: Path = typer.Option(None, help=f"metrics file (default: {MODELS}/teacher.json)"),
    manifest: Path = MANIFEST,
    params: Path = PARAMS,
) -> None:
    """Score the teacher (cache_teacher.teacher): ASR probe on its frozen layers, RTF, memory."""
    from stages import evaluate_teacher

    _score("teacher", evaluate_teacher.run, out, manifest, params)


@app.command("evaluate-baseline")
def evaluate_baseline_cmd(
    name: str = typer.Argument(..., help="fbank (log-mel features) or random_teacher"),
    out: Path = typer.Option(None, help=f"metrics file (default: {MODELS}/<name>.json)"),
    manifest: Path = MANIFEST,
    params: Path = PARAMS,
) -> None:
    """Score a baseline in the same probe: log-mel features, or the untrained teacher."""
    from stages import evaluate_baseline

    _score(name, partial(evaluate_baseline.run, name=name), out, manifest, params)


def _score(name: str, run: Callable, out: Path | None, manifest: Path, params: Path) -> None:
    """Score model ``name`` built from the teacher's settings (``cache_teacher.teacher``) with
    ``run(cfg, teacher=..., manifest=..., out=...)``, the params ``evaluate`` its ``cfg``."""
    from pipeline.evaluation.scoring import EvaluateConfig

    with reported():
        raw = load_params(params)
        cfg = section(raw, "evaluate", EvaluateConfig)
        run(cfg, teacher=_teacher(raw), manifest=manifest, out=_out(name, out))
    typer.echo(f"{name}: {_out(name, out)}")


@app.command("evaluate-student")
def evaluate_student_cmd(
    name: str = typer.Argument(..., help="student name: a key of `students` in params"),
    checkpoint: Path = typer.Option(None, help="its model.pt (default: students/<name>/model.pt)"),
    out: Path = typer.Option(None, help=f"metrics file (default: {MODELS}/<name>.json)"),
    manifest: Path = MANIFEST,
    cache: str = CACHE,
    params: Path = PARAMS,
) -> None:
    """Score a trained student: ASR probe, agreement with the cached teacher, RTF, memory."""
    from pipeline.evaluation.scoring import EvaluateConfig
    from pipeline.students.checkpoint import CHECKPOINT
    from stages import evaluate_student

    with reported():
        cfg = section(load_params(params), "evaluate", EvaluateConfig)
        checkpoint = checkpoint or Path("students") / name / CHECKPOINT
        evaluate_student.run(cfg, name, checkpoint, manifest, cache, _out(name, out))
    typer.echo(f"{name}: {_out(name, out)}")


@app.command("report")
def report_cmd(
    out: Path = typer.Option(Path("eval"), help="folder: metrics.json, report.md, report.png"),
    models: Path = typer.Option(MODELS, help="folder of the per-model metrics"),
    students_dir: Path = typer.Option(Path("students"), help="folder of trained students"),
    sweep_log: Path = typer.Option(
        Path("sweeps/training"), help="the training log of the params `sweep` (its curves)"
    ),
    params: Path = PARAMS,
) -> None:
    """Gather the teacher, the baselines, every student and every sweep student in params into
    one report, with every model's intervals and the comparisons of params `report`."""
    from pipeline.evaluation.readout import comparison_lines
    from pipeline.evaluation.report import ReportConfig
    from pipeline.evaluation.scoring import EvaluateConfig
    from pipeline.students import parse_students, sweep_students
    from pipeline.training.live import read_curves
    from stages import report

    with reported():
        raw = load_params(params)
        cfg = section(raw, "evaluate", EvaluateConfig)
        students = list(parse_students(raw))
        swept = list(sweep_students(raw)) if "sweep" in raw else []
        curves = {n: read_curves(students_dir / n) for n in students}
        curves |= {n: read_curves(sweep_log, n) for n in swept}
        names = ["teacher", *cfg.baselines, *students, *swept]
        metrics = report.run(cfg, section(raw, "report", ReportConfig), names, models, curves, out)
    typer.echo(f"report: {out / 'report.md'}  metrics: {out / report.METRICS}")
    for line in comparison_lines(metrics):
        typer.echo(f"  {line}")


@app.command("compare")
def compare_cmd(
    a: str = typer.Argument(..., help="MODEL or MODEL@REV (a git revision or a DVC experiment)"),
    b: str = typer.Argument(..., help="the model A is compared with, the same way"),
    split: list[str] = typer.Option(None, help="split(s) both were scored on (default: all)"),
    models: Path = typer.Option(MODELS, help="folder of the per-model evaluations"),
    params: Path = PARAMS,
) -> None:
    """A's error rates minus B's (PER, WER, CER), paired by utterance, with the interval and
    verdict of params `report` (confidence, bootstrap): e.g. `pipeline compare dkd_b4@exp-a
    dkd_b4@exp-b` reads a queued sweep."""
    from pipeline.evaluation.readout import compare_lines
    from pipeline.evaluation.report import ReportConfig
    from pipeline.evaluation.revisions import read_evaluation

    with reported():
        raw = load_params(params) if params.is_file() else {}
        cfg = section(raw, "report", ReportConfig) if "report" in raw else ReportConfig()
        sides = (a, read_evaluation(a, models)), (b, read_evaluation(b, models))
        lines = compare_lines(*sides, split, cfg)
    for line in lines:
        typer.echo(line)
