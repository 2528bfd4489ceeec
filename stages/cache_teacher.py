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
from pipeline.teacher.fitting import fitted_state
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
    fit_only: bool = False,
) -> CacheHeader | None:
    """Write the teacher cache for ``manifest`` at ``out`` (a folder or an fsspec URL).

    First the state fitted once for every part (k-means centroids, a learned codec), fitted
    now unless it is there for these settings; ``fit_only`` stops after it (before shard jobs,
    which never fit). With ``shard=(i, n)`` only every n-th shard of the plan, from the i-th,
    is computed; the header is written by whichever job finds every part committed.
    ``compute=False`` only writes the header (every part must be committed). Returns the
    header, or None when parts are still missing.

    Raises:
        OutputError: ``out`` holds something that is not a cache, another run writes it, or a
            shard job finds nothing fitted.
        AudioError, CheckpointError: an unreadable audio file or teacher (named).
    """
    torch.set_num_threads(cfg.threads)
    utts = read_manifest(manifest)
    teacher = load_teacher(cfg.teacher, utts, manifest)
    with output_lock(out) if shard is None else nullcontext():
        prepare_location(out)
        may_fit = shard is None and compute
        fitted = fitted_state(teacher, cfg, utts, manifest, out, may_fit)
        if fit_only:
            return None
        header = cache_header(teacher, cfg, manifest, fitted)
        shards = plan_shards(utts, cfg, header)
        names = [s.name for s in shards]
        if shard is None:
            prune(out, keep=names)  # parts of another teacher, corpus or settings
        mine = (shards if shard is None else shards[shard[0] :: shard[1]]) if compute else []
        done = committed(out, names)
        todo = [s for s in mine if s.name not in done]
        log.info("%d of %d shards to compute (%d committed)", len(todo), len(mine), len(done))
        _compute(teacher, cfg, header, fitted.codec, todo, manifest, out)
        if compute and set(names) - committed(out, names):
            log.info("%s: waiting for other shards; the last job writes the header", out)
            return None
        frontend = frontend_bytes(teacher)
        return _finalize(out, header, names, frontend, fitted.checksums, shard is None)


def _finalize(out, header, names, frontend, written, locked: bool) -> CacheHeader | None:
    if locked:
        return finalize(out, header, names, frontend, written)
    try:
        with output_lock(out):
            return finalize(out, header, names, frontend, written)
    except OutputError:
        log.info("another job is writing the header of %s", out)
        return None


def _compute(teacher, cfg, header, codec, todo, manifest, out) -> None:
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
            _on_dask(cfg, teacher, header, codec, todo, manifest, out, on_batch)
        else:
            for shard in todo:
                run_shard(teacher, cfg, header, codec, shard, manifest, out, on_batch)


def _on_dask(cfg, teacher, header, codec, todo, manifest, out, on_batch) -> None:
    """Map shards over a dask.distributed cluster: each worker loads the teacher once from its
    recipe (the same source, the client's k-means centroids; one GPU per worker with dask-cuda)
    and commits its parts where the cache lives (a shared filesystem or an fsspec URL)."""
    from distributed import Client, as_completed

    cache = out if "://" in str(out) else Path(out).resolve()
    with Client(cfg.scheduler) as client:
        recipe = TeacherRecipe.of(teacher)
        futures = {
            client.submit(
                run_shard_on_worker, recipe, cfg, header, codec, shard, manifest.resolve(), cache,
                key=f"cache-teacher-{shard.name}", pure=False, retries=2,
            ): shard
            for shard in todo
        }  # fmt: skip
        for future in as_completed(futures):
            on_batch(len(futures[future].utts), future.result())
