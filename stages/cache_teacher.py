"""Stage `cache_teacher`: run the teacher once over the corpus, write logits and targets.

The manifest is cut into shards of ``shard_utterances`` (in manifest order). Each shard is
written as a complete part cache under ``<out>.partial/`` and committed atomically; a killed run
resumes by skipping committed parts. When every part is there, the backend merges them into
``<out>`` (header last) and the partial folder is removed. Shards run in this process, or map
over dask.distributed workers when ``scheduler`` names one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors
from torch.utils.data import DataLoader, Dataset

from pipeline.audio import SAMPLE_RATE, read_audio
from pipeline.batching import length_batches
from pipeline.errors import AudioError, ConfigError
from pipeline.frames import FrameSpec
from pipeline.frontend import frontend_spec
from pipeline.io import atomic_write_text
from pipeline.manifest import Utterance, audio_path, corpus_fingerprint, read_manifest
from pipeline.progress import progress_bar
from pipeline.teacher import Teacher, TeacherConfig, build_teacher, teacher_info
from storage import BACKENDS, CacheHeader
from storage.base import FRONTEND, HEADER, SCHEMA_VERSION, sha256_file
from storage.codecs import CODECS, FEATURE_ENCODINGS, FullConfig, TopKConfig, encode_feature
from storage.location import is_url, upload
from storage.wds_store import WdsConfig
from storage.zarr_store import ZarrConfig

log = logging.getLogger(__name__)

PLAN = "plan.json"


@dataclass(frozen=True)
class CacheTeacherConfig:
    """The `cache_teacher` section of params.yaml.

    Attributes:
        teacher: which teacher and head to run.
        backend: registered cache backend; its settings are the section of the same name.
        codec: registered logit codec (``full``, ``topk``); its settings likewise.
        shard_utterances: utterances per shard, the unit of commit, resume and parallelism.
        scheduler: "" runs shards in this process; ``tcp://host:port`` maps them over that
            dask.distributed cluster (workers must see the same filesystem).
        batch_seconds: audio per inference batch (utterances are length-sorted first).
        threads: torch intra-op threads.
        loader_workers: processes decoding audio ahead of the teacher (0: in the main process).
        features: teacher features cached per frame beside the logits: ``conv`` (the conv
            stack's output, for students with ``frontend: cached``) and ``layer_<i>``
            (Transformer layer i, 0 = its input; for feature-distillation students).
        feature_encoding: ``float16`` or ``int8`` (with a per-frame scale).
    """

    teacher: TeacherConfig
    backend: str
    codec: str
    features: list[str]
    feature_encoding: str
    shard_utterances: int
    scheduler: str
    batch_seconds: float
    threads: int
    loader_workers: int
    zarr: ZarrConfig
    webdataset: WdsConfig
    full: FullConfig
    topk: TopKConfig

    def __post_init__(self) -> None:
        BACKENDS[self.backend]
        CODECS[self.codec]
        if self.shard_utterances < 1:
            raise ValueError("shard_utterances must be >= 1")
        if self.feature_encoding not in FEATURE_ENCODINGS:
            raise ValueError(f"feature_encoding must be one of {FEATURE_ENCODINGS}")


class BatchAudio(Dataset):
    """Item ``i``: the 16 kHz waveforms of batch ``i`` (checked to give at least one frame)."""

    def __init__(self, batches: list[list[Utterance]], manifest: Path, frames: FrameSpec) -> None:
        self.batches = batches
        self.manifest = manifest
        self.frames = frames

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        wavs = []
        for utt in self.batches[i]:
            wav = read_audio(audio_path(utt, self.manifest))
            if self.frames.num_frames(len(wav)) < 1:
                raise AudioError(
                    f"{audio_path(utt, self.manifest)}: {len(wav)} samples at 16 kHz is too "
                    f"short for one teacher frame ({utt.id}); drop it from the corpus"
                )
            wavs.append(wav)
        return wavs


def _feature_specs(teacher: Teacher, cfg: CacheTeacherConfig) -> dict[str, dict]:
    """Header entries of the features to cache: name -> dim and encoding."""
    names = teacher.feature_names()
    unknown = [f for f in cfg.features if f not in names]
    if unknown:
        raise ConfigError(
            f"cache_teacher.features: {unknown} not features of this teacher; choose from {names}"
        )
    hcfg = teacher.encoder.config
    return {
        f: {"dim": hcfg.conv_dim[-1] if f == "conv" else hcfg.hidden_size,
            "encoding": cfg.feature_encoding}
        for f in cfg.features
    }  # fmt: skip


def staging_root() -> Path:
    """Where caches bound for a URL are built: ``$HUBERT_KD_STAGING`` or the temp folder."""
    return Path(os.environ.get("HUBERT_KD_STAGING", tempfile.gettempdir())) / "hubert-kd-staging"


def part_path(work: Path, index: int) -> Path:
    return work / f"part-{index:06d}"


def run_shard(
    teacher: Teacher,
    cfg: CacheTeacherConfig,
    header: CacheHeader,
    utts: list[Utterance],
    manifest: Path,
    out: Path,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Run the teacher over one shard and commit it as a part cache at ``out``.

    Audio is decoded by loader workers and writes (zstd) run on a thread, both overlapping the
    teacher's forward passes. ``on_batch(utterances, frames)`` reports progress. Returns frames.
    """
    torch.set_num_threads(cfg.threads)
    codec = CODECS[cfg.codec](getattr(cfg, cfg.codec))
    backend = BACKENDS[cfg.backend](getattr(cfg, cfg.backend))
    batches = length_batches(
        utts, lambda u: u.seconds, cfg.batch_seconds, sort_key=lambda u: (u.seconds, u.id)
    )
    loader = DataLoader(
        BatchAudio(batches, manifest, teacher.frames),
        batch_size=None,
        num_workers=cfg.loader_workers,
        prefetch_factor=4 if cfg.loader_workers else None,
    )

    def write(batch, outputs) -> None:
        for utt, (logits, targets, feats) in zip(batch, outputs, strict=True):
            targets = targets.numpy()
            try:
                fields = codec.encode(logits.numpy(), targets)
                for name, x in feats.items():
                    fields.update(encode_feature(name, x.numpy(), cfg.feature_encoding))
            except ValueError as err:
                raise ValueError(f"{utt.id}: {err}") from err
            writer.write(utt.id, {"targets": targets, **fields})

    frames = 0
    with backend.writer(out, header) as writer, ThreadPoolExecutor(1) as io:
        pending = None
        for batch, wavs in zip(batches, loader, strict=True):
            outputs = teacher.outputs(wavs, tuple(cfg.features))
            if pending is not None:
                pending.result()  # keeps order and bounds memory to one batch in flight
            pending = io.submit(write, batch, outputs)
            n = sum(len(logits) for logits, _, _ in outputs)
            frames += n
            if on_batch is not None:
                on_batch(len(batch), n)
        if pending is not None:
            pending.result()
        writer.close()
    return frames


def _prepare_work(work: Path, plan: dict) -> None:
    """Reuse ``work`` if it was started with the same plan; otherwise start it afresh."""
    plan_text = json.dumps(plan, sort_keys=True)
    if work.is_dir() and (work / PLAN).is_file() and (work / PLAN).read_text() == plan_text:
        for stale in work.glob(".*.tmp-*"):  # a part a killed run was writing
            shutil.rmtree(stale, ignore_errors=True)
        return
    if work.exists():
        log.warning("discarding %s: it was started with another teacher, corpus or settings", work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    atomic_write_text(work / PLAN, plan_text)


def run(cfg: CacheTeacherConfig, manifest: Path, out_dir: str | Path) -> CacheHeader:
    """Write the teacher cache for every utterance of ``manifest`` into ``out_dir``.

    ``out_dir`` may be an fsspec URL (``s3://bucket/cache``): the cache is then built, with the
    same resume and atomic commits, in a local staging folder under ``staging_root()`` and
    uploaded, header last.

    Raises:
        AudioError: an unreadable audio file (named).
        CheckpointError: a teacher that cannot be loaded (named).
        ValueError: an utterance too short to give a single frame (named).
    """
    if is_url(out_dir):
        local = staging_root() / hashlib.sha256(str(out_dir).encode()).hexdigest()[:16] / "cache"
        header = run(cfg, manifest, local)
        log.info("uploading %s to %s", local, out_dir)
        upload(local, str(out_dir))
        shutil.rmtree(local.parent)
        return header
    out_dir = Path(out_dir)
    torch.set_num_threads(cfg.threads)
    utts = read_manifest(manifest)

    def fit_audio():
        train = [u for u in utts if u.split == "train"] or utts
        step = max(1, len(train) // cfg.teacher.kmeans.fit_utterances)
        chosen = train[::step][: cfg.teacher.kmeans.fit_utterances]
        return (read_audio(audio_path(u, manifest)) for u in chosen)

    trained_on = teacher_info(cfg.teacher.source).get("corpus", {}).get("fingerprint")
    if trained_on and trained_on != corpus_fingerprint(utts):
        log.warning(
            "%s was pre-trained on another corpus (fingerprint %s...) than %s (%s...). If this is "
            "the demo corpus, its generator has changed: re-run `pipeline pretrain-teacher` "
            "(README) to match it.",
            cfg.teacher.source, trained_on[:12], manifest, corpus_fingerprint(utts)[:12],
        )  # fmt: skip
    teacher = build_teacher(cfg.teacher, fit_audio)
    codec = CODECS[cfg.codec](getattr(cfg, cfg.codec))
    header = CacheHeader(
        schema_version=SCHEMA_VERSION,
        backend=cfg.backend,
        teacher=teacher.description,
        fingerprint=teacher.fingerprint(),
        corpus=sha256_file(manifest),
        num_classes=teacher.num_classes,
        frame_rate=teacher.frames.frame_rate(SAMPLE_RATE),
        frame_kernels=list(teacher.frames.kernels),
        frame_strides=list(teacher.frames.strides),
        codec=codec.header(),
        target_source=teacher.target_source,
        num_utterances=0,
        num_frames=0,
        features=_feature_specs(teacher, cfg),
    )
    shards = [utts[i : i + cfg.shard_utterances] for i in range(0, len(utts), cfg.shard_utterances)]
    work = out_dir.with_name(out_dir.name + ".partial")
    backend_cfg = getattr(cfg, cfg.backend)
    plan = {
        "header": header.to_json(),
        "backend": repr(backend_cfg),
        "batch_seconds": cfg.batch_seconds,
        "device": cfg.teacher.device,
        "precision": cfg.teacher.precision,
        "shards": [[u.id for u in shard] for shard in shards],
    }
    _prepare_work(work, plan)
    todo = [i for i in range(len(shards)) if not (part_path(work, i) / HEADER).is_file()]
    if len(todo) < len(shards):
        log.info(
            "resuming: %d of %d shards already committed in %s",
            len(shards) - len(todo),
            len(shards),
            work,
        )

    start = time.perf_counter()
    with progress_bar() as bar:
        done_utts = sum(len(shards[i]) for i in range(len(shards)) if i not in todo)
        task = bar.add_task("cache-teacher", total=len(utts), completed=done_utts, info="")
        frames = 0

        def on_batch(n_utts: int, n_frames: int) -> None:
            nonlocal frames
            frames += n_frames
            rate = frames / (time.perf_counter() - start)
            bar.update(task, advance=n_utts, info=f"{rate:,.0f} frames/s")

        if cfg.scheduler:
            _run_on_dask(cfg, teacher, header, shards, todo, manifest, work, on_batch)
        else:
            for i in todo:
                run_shard(teacher, cfg, header, shards[i], manifest, part_path(work, i), on_batch)

    backend = BACKENDS[cfg.backend](backend_cfg)
    fe = teacher.encoder.feature_extractor
    files = {
        FRONTEND: save_safetensors(
            {k: v.detach().cpu().contiguous() for k, v in fe.state_dict().items()}
        )
    }
    frontend = {**frontend_spec(teacher.encoder.config), "normalize": teacher.normalize}
    header = dataclasses.replace(header, frontend=frontend)
    parts = [part_path(work, i) for i in range(len(shards))]
    header = backend.merge(parts, out_dir, header, files)
    shutil.rmtree(work)
    log.info(
        "cached %d utterances, %d frames with %s",
        header.num_utterances,
        header.num_frames,
        header.teacher,
    )
    return header


def _run_on_dask(cfg, teacher, header, shards, todo, manifest, work, on_batch) -> None:
    """Map the missing shards over a dask.distributed cluster; each worker gets the teacher once."""
    from distributed import Client, as_completed

    with Client(cfg.scheduler) as client:
        remote_teacher = client.scatter(teacher, broadcast=True)
        futures = {
            client.submit(
                run_shard, remote_teacher, cfg, header, shards[i], manifest.resolve(),
                part_path(work, i).resolve(), key=f"cache-teacher-shard-{i}", pure=False,
            ): i
            for i in todo
        }  # fmt: skip
        for future in as_completed(futures):
            on_batch(len(shards[futures[future]]), future.result())
