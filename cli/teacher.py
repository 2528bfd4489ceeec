"""Stage one's commands: `cache-teacher`, `cache-info`, `cache-verify`, `pretrain-teacher`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from cli.common import MANIFEST, PARAMS, app, console, reported
from pipeline.core.config import load_params, override, section


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
    shard: str = typer.Option(
        None,
        help="compute only slice i/n of the shard plan (e.g. a SLURM array task: "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); the job that completes the cache "
        "writes its header",
    ),
    finalize: bool = typer.Option(
        False, "--finalize", help="only write the header, once every part is committed"
    ),
    fit_only: bool = typer.Option(
        False,
        "--fit-only",
        help="only fit what every part shares (k-means centroids, a learned codec) and keep it "
        "in the cache folder: run it once before --shard jobs, which never fit",
    ),
) -> None:
    """Run the teacher once over the corpus and cache per-frame logits and targets."""
    from pipeline.teacher.caching import CacheTeacherConfig
    from stages import cache_teacher

    with reported():
        changes = {
            "cache_teacher.teacher.source": teacher,
            "cache_teacher.teacher.trust_checkpoint": trust_checkpoint,
            "cache_teacher.scheduler": scheduler,
        }
        cfg = section(override(load_params(params), changes), "cache_teacher", CacheTeacherConfig)
        part = cache_teacher.parse_shard(shard) if shard else None
        header = cache_teacher.run(cfg, manifest, out, part, not finalize, fit_only)
    if fit_only:
        typer.echo(f"cache: {out}  fitted; now run the shard jobs")
    elif header is None:
        typer.echo(f"cache: {out}  parts written; other shards still missing")
    else:
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
    """Check every file of a cache against the checksums taken when it was written."""
    from storage import verify_cache

    with reported():
        problems = verify_cache(cache)
    for problem in problems:
        console.print(f"[red]damaged:[/red] {escape(f'{cache}/{problem}')}", soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{cache}: all files match their checksums")


@app.command("pretrain-teacher")
def pretrain_teacher_cmd(
    out: Path = typer.Option(Path("assets/demo-teacher"), help="teacher directory to write"),
    manifest: Path = MANIFEST,
    params: Path = PARAMS,
) -> None:
    """Pre-train a small HuBERT (HuBERT iteration 1: masked prediction of MFCC k-means
    clusters) and write a teacher directory usable as hf:<out>."""
    from pipeline.pretraining.hubert import PretrainConfig
    from stages import pretrain_teacher

    with reported():
        cfg = section(load_params(params), "pretrain_teacher", PretrainConfig)
        summary = pretrain_teacher.run(cfg, manifest, out)
    dev = summary["dev"]
    typer.echo(
        f"teacher: {out}  {summary['total_seconds'] / 60:.1f} min; dev agreement with MFCC "
        f"k-means: masked {dev['masked_accuracy']:.3f}, unmasked {dev['unmasked_accuracy']:.3f} "
        f"(majority class {dev['majority_class_rate']:.3f})"
    )
