"""Stage two's commands: `train-student`, `sweep`, `student-info`."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import CACHE, MANIFEST, PARAMS, app, reported
from pipeline.core.config import load_params, section, to_dict
from pipeline.core.errors import ConfigError
from pipeline.core.io import write_json

SWEEP_RECORD = "sweep.json"  # in a params sweep's folder: its students, as resolved


@app.command("train-student")
def train_student_cmd(
    name: str = typer.Argument(..., help="student name: a key of `students` in params"),
    out: Path = typer.Option(None, help="output folder (default: students/<name>)"),
    manifest: Path = MANIFEST,
    cache: str = CACHE,
    params: Path = PARAMS,
    restart: bool = typer.Option(
        False, "--restart", help="delete the run's checkpoint and start from step 0"
    ),
) -> None:
    """Train one student from the teacher cache (the teacher is never run). Under torchrun,
    data-parallel over the ranks. A killed run resumes from its checkpoint, across changes of
    threads, device, logging or checkpoint cadence or rank count."""
    from pipeline.students import parse_students
    from pipeline.training.config import TrainConfig
    from stages import train_student

    with reported():
        raw = load_params(params)
        students = parse_students(raw)
        if name not in students:
            raise ConfigError(f"no student {name!r} in params `students` ({', '.join(students)})")
        out = out or Path("students") / name
        metrics = train_student.run(
            {name: students[name]},
            section(raw, "train", TrainConfig),
            manifest,
            cache,
            {name: out},
            out / train_student.STATE,
            log_dir=out,
            restart=restart,
        )
    if name in metrics:  # rank 0
        typer.echo(f"student {name}: {metrics[name]['final']}")


@app.command("sweep")
def sweep_cmd(
    base: str = typer.Argument(
        None, help="the student in params `students` to vary (default: the params `sweep`)"
    ),
    grid: list[str] = typer.Option(
        None, help="KEY=V1,V2,... inside the student, e.g. losses.dkd.beta=1,4,8 (repeatable)"
    ),
    out: Path = typer.Option(Path("sweeps"), help="folder for one sub-folder per student"),
    log: Path = typer.Option(
        None, help="the training log (dvclive folder) of the sweep (default: <out>/training)"
    ),
    manifest: Path = MANIFEST,
    cache: str = CACHE,
    params: Path = PARAMS,
    scheduler: str = typer.Option(
        None,
        help="a dask.distributed address (tcp://host:port): spread the students over its "
        "workers, each training its share in one pass (paths must be shared)",
    ),
    restart: bool = typer.Option(
        False, "--restart", help="delete the sweep's checkpoint and start from step 0"
    ),
) -> None:
    """Train several students in one pass over the cache (each batch read once for all): a
    grid around BASE, or the students of the params `sweep` section (recorded, as resolved, in
    <out>/sweep.json); or spread them over a dask cluster's workers."""
    from pipeline.students import grid_students, parse_grid, parse_student, sweep_students
    from pipeline.training.config import TrainConfig
    from stages import train_student

    with reported():
        raw = load_params(params)
        if (base is None) != (not grid):
            raise ConfigError("give a student and --grid, or neither (the params `sweep`)")
        if base is None:
            students = sweep_students(raw)
        elif base not in raw.get("students", {}):
            raise ConfigError(f"no student {base!r} in params `students`")
        else:
            raws = grid_students(base, raw["students"][base], parse_grid(grid))
            students = {name: parse_student(cfg, f"sweep {name}") for name, cfg in raws.items()}
        dirs = {name: out / name for name in students}
        out.mkdir(parents=True, exist_ok=True)
        if base is None:  # a file even for a sweep of none: DVC and git keep no empty folder
            write_json(out / SWEEP_RECORD, {n: to_dict(s) for n, s in students.items()})
        train_cfg = section(raw, "train", TrainConfig)
        if scheduler:
            metrics = train_student.run_on_cluster(
                scheduler, students, train_cfg, manifest, cache, dirs, out
            )
        else:
            log = log or out / "training"
            if log in dirs.values():
                raise ConfigError(f"--log {log}: the folder of student {log.name!r}")
            metrics = train_student.run(
                students, train_cfg, manifest, cache, dirs, out / "sweep_state.pt", log, True,
                restart,
            )  # fmt: skip
    for name, m in metrics.items():
        typer.echo(f"{name}: {m['final']}")


@app.command("student-info")
def student_info_cmd(
    names: list[str] = typer.Argument(None, help="students in params `students` (default: all)"),
    classes: int = typer.Option(None, help="C (default: from --cache if it exists, else 500)"),
    cache: str = CACHE,
    params: Path = PARAMS,
) -> None:
    """Print each student's parameter count, in total and per part."""
    from pipeline.students import parse_students
    from pipeline.students.sizes import describe_sizes

    with reported():
        students = parse_students(load_params(params))
        unknown = [n for n in names or [] if n not in students]
        if unknown:
            raise ConfigError(f"no student {unknown[0]!r} in params `students`")
        chosen = {n: students[n] for n in names or students}
        for line in describe_sizes(chosen, cache, classes):
            typer.echo(line)
