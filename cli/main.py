"""The `pipeline` command: thin typer wrappers that load a params section and call a stage.

Stages are imported inside each command so that `pipeline --help` (and any process that
imports this module, such as a spawned worker) does not pay for torch and transformers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from pipeline.core.config import from_dict, load_params, override, section
from pipeline.core.errors import (
    AudioError,
    CacheFormatError,
    CheckpointError,
    ConfigError,
    CorpusError,
    ManifestError,
    OutputError,
)

app = typer.Typer(
    help="Distil HuBERT into small LSTM students from a cached teacher (KD / DKD).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file (one section per stage)")
MANIFEST = typer.Option(Path("data/manifest.jsonl"), help="corpus manifest written by `prepare`")
CACHE = typer.Option(
    "cache", help="teacher cache written by `cache-teacher`: a folder or an fsspec URL"
)

# Domain errors become a one-line message and exit code 2 (bad config) or 1 (bad input, and
# any other ValueError/KeyError the library raises with a message).
INPUT_ERRORS = (
    AudioError,
    CorpusError,
    ManifestError,
    CacheFormatError,
    CheckpointError,
    OutputError,
    FileNotFoundError,
)


def one_line(err: BaseException) -> str:
    """The message of a domain error in one line. Errors re-raised from DataLoader workers
    carry the worker's traceback in their message: keep its last line, the original message."""
    message = str(err.args[0] if err.args else err)
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


@contextmanager
def reported() -> Iterator[None]:
    try:
        yield
    except ConfigError as err:
        console.print(f"[red]config error:[/red] {escape(one_line(err))}", soft_wrap=True)
        raise typer.Exit(2) from err
    except (*INPUT_ERRORS, ValueError, KeyError) as err:
        console.print(f"[red]error:[/red] {escape(one_line(err))}", soft_wrap=True)
        raise typer.Exit(1) from err


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )


@app.command("prepare")
def prepare_cmd(
    out: Path = typer.Option(
        Path("data"), help="output folder: manifest.jsonl, summary.json, audio/"
    ),
    params: Path = PARAMS,
    skip_bad: bool = typer.Option(
        None, "--skip-bad/--no-skip-bad", help="override prepare.skip_bad"
    ),
) -> None:
    """Build the corpus manifest (demo synthesis, LibriSpeech folder or a user list)."""
    from stages import prepare

    with reported():
        raw = override(load_params(params), {"prepare.skip_bad": skip_bad})
        summary = prepare.run(section(raw, "prepare", prepare.PrepareConfig), out)
    typer.echo(f"manifest: {out / prepare.MANIFEST}  {summary}")


@app.command("pretrain-teacher")
def pretrain_teacher_cmd(
    out: Path = typer.Option(Path("assets/demo-teacher"), help="teacher directory to write"),
    manifest: Path = MANIFEST,
    params: Path = PARAMS,
) -> None:
    """Pre-train the random teacher's architecture (HuBERT iteration 1: masked prediction of
    MFCC k-means clusters) and write a teacher directory usable as hf:<out>."""
    from pipeline.teacher.config import RandomTeacherConfig
    from stages import pretrain_teacher

    with reported():
        raw = load_params(params)
        cfg = section(raw, "pretrain_teacher", pretrain_teacher.PretrainConfig)
        size = from_dict(RandomTeacherConfig, raw["cache_teacher"]["teacher"]["random"],
                         where="cache_teacher.teacher.random")  # fmt: skip
        summary = pretrain_teacher.run(cfg, size, manifest, out)
    dev = summary["dev"]
    typer.echo(
        f"teacher: {out}  {summary['total_seconds'] / 60:.1f} min; dev agreement with MFCC "
        f"k-means: masked {dev['masked_accuracy']:.3f}, unmasked {dev['unmasked_accuracy']:.3f} "
        f"(majority class {dev['majority_class_rate']:.3f})"
    )


@app.command("cache-teacher")
def cache_teacher_cmd(
    out: str = typer.Option("cache", help="cache to write: a folder or an fsspec URL"),
    manifest: Path = MANIFEST,
    params: Path = PARAMS,
    teacher: str = typer.Option(
        None, help="override cache_teacher.teacher.source: random, hf:<id or dir>, fairseq:<.pt>"
    ),
    trust_checkpoint: bool = typer.Option(
        None,
        "--trust-checkpoint/--no-trust-checkpoint",
        help="allow files that pickle Python objects, only for files you trust: fairseq "
        "checkpoints and joblib/scikit-learn k-means files (kmeans.path; pickles can run code). "
        "Both are read with restricted unpicklers that admit only fairseq/argparse stand-ins, "
        "scikit-learn k-means and numpy arrays; .npy/.safetensors centroids need no flag",
    ),
    scheduler: str = typer.Option(
        None, help="override cache_teacher.scheduler: a dask.distributed address, tcp://host:port"
    ),
) -> None:
    """Run the teacher once over the corpus and cache per-frame logits and targets."""
    from stages import cache_teacher

    with reported():
        changes = {
            "cache_teacher.teacher.source": teacher,
            "cache_teacher.teacher.trust_checkpoint": trust_checkpoint,
            "cache_teacher.scheduler": scheduler,
        }
        raw = override(load_params(params), changes)
        cfg = section(raw, "cache_teacher", cache_teacher.CacheTeacherConfig)
        header = cache_teacher.run(cfg, manifest, out)
    typer.echo(f"cache: {out}  {header.num_utterances} utterances, {header.num_frames} frames")


@app.command("cache-info")
def cache_info_cmd(cache: str = typer.Argument(..., help="cache folder or fsspec URL")) -> None:
    """Print what a teacher cache holds: counts, codec, bytes per frame, compression, header."""
    from storage import cache_summary

    with reported():
        summary = cache_summary(cache)
    for key, value in summary.items():
        typer.echo(f"{key:>24}: {value}")


@app.command("cache-verify")
def cache_verify_cmd(cache: str = typer.Argument(..., help="cache folder or fsspec URL")) -> None:
    """Check every file of a cache against the checksums in its header."""
    from storage import verify_cache

    with reported():
        problems = verify_cache(cache)
    for problem in problems:
        console.print(f"[red]damaged:[/red] {escape(f'{cache}/{problem}')}", soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{cache}: all files match their checksums")


@app.command("train-student")
def train_student_cmd(
    name: str = typer.Argument(..., help="student name: a key of `students` in params"),
    out: Path = typer.Option(None, help="output folder (default: students/<name>)"),
    manifest: Path = MANIFEST,
    cache: str = CACHE,
    params: Path = PARAMS,
) -> None:
    """Train one student from the teacher cache (the teacher is never run)."""
    from pipeline.students import parse_students
    from pipeline.training.loop import TrainConfig
    from stages import train_student

    with reported():
        raw = load_params(params)
        train_cfg = section(raw, "train", TrainConfig)
        students = parse_students(raw)
        if name not in students:
            raise ConfigError(f"no student {name!r} in params `students` ({', '.join(students)})")
        out = out or Path("students") / name
        state = out / train_student.STATE
        metrics = train_student.run(
            {name: students[name]}, train_cfg, manifest, cache, {name: out}, state
        )
    typer.echo(f"student {name}: {metrics[name]['final']}")


@app.command("student-info")
def student_info_cmd(
    names: list[str] = typer.Argument(None, help="students in params `students` (default: all)"),
    classes: int = typer.Option(None, help="C (default: from --cache if it exists, else 500)"),
    cache: str = CACHE,
    params: Path = PARAMS,
) -> None:
    """Print each student's parameter count, in total and per part."""
    from pipeline.audio.frames import HUBERT_FRAMES, FrameSpec
    from pipeline.students import parse_students
    from pipeline.students.checkpoint import build_student
    from storage import read_header
    from storage.base import read_frontend
    from storage.location import files

    with reported():
        students = parse_students(load_params(params))
        frames, num_classes, teacher_frontend, dims = HUBERT_FRAMES, classes or 500, None, {}
        if "header.json" in files(cache):  # a cache exists there
            header = read_header(cache)
            frames = FrameSpec(tuple(header.frame_kernels), tuple(header.frame_strides))
            num_classes = classes or header.num_classes
            teacher_frontend = read_frontend(cache)
            dims = {f: spec["dim"] for f, spec in header.features.items()}
        for name in names or list(students):
            if name not in students:
                raise ConfigError(f"no student {name!r} in params `students`")
            model = build_student(students[name], num_classes, frames, teacher_frontend, dims)
            parts = {
                part: sum(p.numel() for p in module.parameters())
                for part, module in model.named_children()
                if any(True for _ in module.parameters())
            }
            total = sum(parts.values())
            detail = ", ".join(f"{part} {n / 1e6:.2f}M" for part, n in parts.items())
            typer.echo(
                f"{name}: {total:,} parameters ({total / 1e6:.2f}M; C={num_classes}: {detail})"
            )


@app.command("sweep")
def sweep_cmd(
    base: str = typer.Argument(..., help="the student in params `students` to vary"),
    grid: list[str] = typer.Option(
        ..., help="KEY=V1,V2,... inside the student, e.g. losses.dkd.beta=1,4,8 (repeatable)"
    ),
    out: Path = typer.Option(Path("sweeps"), help="folder for one sub-folder per student"),
    manifest: Path = MANIFEST,
    cache: str = CACHE,
    params: Path = PARAMS,
) -> None:
    """Train a grid of students in one pass over the cache (each batch read once for all)."""
    from pipeline.students import grid_students, parse_grid, parse_student
    from pipeline.training.loop import TrainConfig
    from stages import train_student

    with reported():
        raw = load_params(params)
        if base not in raw.get("students", {}):
            raise ConfigError(f"no student {base!r} in params `students`")
        raws = grid_students(base, raw["students"][base], parse_grid(grid))
        students = {name: parse_student(cfg, f"sweep {name}") for name, cfg in raws.items()}
        train_cfg = section(raw, "train", TrainConfig)
        dirs = {name: out / name for name in students}
        metrics = train_student.run(
            students, train_cfg, manifest, cache, dirs, out / "sweep_state.pt"
        )
    for name, m in metrics.items():
        typer.echo(f"{name}: {m['final']}")


@app.command("evaluate")
def evaluate_cmd(
    out: Path = typer.Option(Path("eval"), help="output folder: metrics.json, report.md/png"),
    students_dir: Path = typer.Option(Path("students"), help="folder of trained students"),
    manifest: Path = MANIFEST,
    cache: str = CACHE,
    params: Path = PARAMS,
) -> None:
    """Compare the teacher, baselines and every student in params: ASR probe (WER, CER, PER),
    teacher agreement, parameters, real-time factor, memory."""
    from pipeline.students import parse_students
    from pipeline.teacher.config import TeacherConfig
    from stages import evaluate, train_student

    with reported():
        raw = load_params(params)
        cfg = section(raw, "evaluate", evaluate.EvaluateConfig)
        teacher_cfg = from_dict(TeacherConfig, raw.get("cache_teacher", {}).get("teacher"),
                                where="cache_teacher.teacher")  # fmt: skip
        names = parse_students(raw)
        checkpoints = {n: students_dir / n / train_student.CHECKPOINT for n in names}
        metrics = evaluate.run(cfg, teacher_cfg, manifest, cache, checkpoints, out)
    typer.echo(f"report: {out / 'report.md'}  metrics: {out / evaluate.METRICS}")
    for name, m in metrics["models"].items():
        per = f"  PER {m['per']:.3f}" if "per" in m else ""
        agree = f"  top1 {m['top1_agreement']:.3f}" if "top1_agreement" in m else ""
        typer.echo(f"  {name}: WER {m['wer']:.3f}{per}{agree}  RTF {m['rtf']:.4f}")


if __name__ == "__main__":
    app()
