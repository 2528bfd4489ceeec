"""Stage `cache_teacher`: run the teacher once over the corpus, write logits and targets.

Shards of the manifest become parts of the cache, each committed where the cache lives as soon
as it is written; a killed run resumes by skipping committed parts. Shards run in this process,
as one slice ``--shard i/n`` of the plan (for SLURM array jobs and the like), or mapped over
dask.distributed workers; whoever sees every part committed writes the header.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from pipeline.core.errors import ConfigError, OutputError
from pipeline.core.locks import output_lock
from pipeline.core.progress import progress_bar
from pipeline.corpus.manifest import read_manifest
from pipeline.teacher.caching import (
    CacheTeacherConfig,
    cache_header,
    frontend_bytes,
    load_teacher,
    plan_shards,
)
from pipeline.teacher.runner import TeacherRecipe, run_shard, run_shard_on_worker
from storage import CacheHeader, committed, finalize, prepare_location, prune

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/8")
    return i, n


def run(
    cfg: CacheTeacherConfig,
    manifest: Path,
    out: str | Path,
    shard: tuple[int, int] | None = None,
    compute: bool = True,
) -> CacheHeader | None:
    """Write the teacher cache for ``manifest`` at ``out`` (a folder or an fsspec URL).

    With ``shard=(i, n)`` only every n-th shard of the plan, from the i-th, is computed; the
    header is written by whichever job finds every part committed. ``compute=False`` only
    writes the header (every part must be committed). Returns the header, or None when parts
    are still missing.

    Raises:
        OutputError: ``out`` holds something that is not a cache, or another run writes it.
        AudioError, CheckpointError: an unreadable audio file or teacher (named).
    """
    torch.set_num_threads(cfg.threads)
    utts = read_manifest(manifest)
    teacher = load_teacher(cfg.teacher, utts, manifest)
    header = cache_header(teacher, cfg, manifest)
    shards = plan_shards(utts, cfg, header)
    names = [s.name for s in shards]
    with output_lock(out) if shard is None else nullcontext():
        prepare_location(out)
        if shard is None:
            prune(out, keep=names)  # parts of another teacher, corpus or settings
        mine = shards if shard is None else shards[shard[0] :: shard[1]]
        mine = mine if compute else []
        done = committed(out, names)
        todo = [s for s in mine if s.name not in done]
        log.info("%d of %d shards to compute (%d committed)", len(todo), len(mine), len(done))
        _compute(teacher, cfg, header, todo, manifest, out)
        if compute and set(names) - committed(out, names):
            log.info("%s: waiting for other shards; the last job writes the header", out)
            return None
        return _finalize(out, header, names, frontend_bytes(teacher), locked=shard is None)


def _finalize(out, header, names, frontend, locked: bool) -> CacheHeader | None:
    if locked:
        return finalize(out, header, names, frontend)
    try:
        with output_lock(out):
            return finalize(out, header, names, frontend)
    except OutputError:
        log.info("another job is writing the header of %s", out)
        return None


def _compute(teacher, cfg, header, todo, manifest, out) -> None:
    """Every shard of ``todo``, in this process or on the dask cluster, with a progress bar."""
    start, frames = time.perf_counter(), 0
    with progress_bar() as bar:
        task = bar.add_task("cache-teacher", total=sum(len(s.utts) for s in todo), info="")

        def on_batch(n_utts: int, n_frames: int) -> None:
            nonlocal frames
            frames += n_frames
            rate = frames / (time.perf_counter() - start)
            bar.update(task, advance=n_utts, info=f"{rate:,.0f} frames/s")

        if cfg.scheduler:
            _on_dask(cfg, teacher, header, todo, manifest, out, on_batch)
        else:
            for shard in todo:
                run_shard(teacher, cfg, header, shard, manifest, out, on_batch)


def _on_dask(cfg, teacher, header, todo, manifest, out, on_batch) -> None:
    """Map shards over a dask.distributed cluster: each worker loads the teacher once from its
    recipe (the same source, the client's k-means centroids; one GPU per worker with dask-cuda)
    and commits its parts where the cache lives (a shared filesystem or an fsspec URL)."""
    from distributed import Client, as_completed

    cache = out if "://" in str(out) else Path(out).resolve()
    with Client(cfg.scheduler) as client:
        recipe = TeacherRecipe.of(teacher)
        futures = {
            client.submit(
                run_shard_on_worker, recipe, cfg, header, shard, manifest.resolve(), cache,
                key=f"cache-teacher-{shard.name}", pure=False, retries=2,
            ): shard
            for shard in todo
        }  # fmt: skip
        for future in as_completed(futures):
            on_batch(len(futures[future].utts), future.result())
