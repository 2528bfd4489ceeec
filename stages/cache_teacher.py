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

from pipeline.audio.batching import length_batches
from pipeline.audio.files import SAMPLE_RATE, read_audio
from pipeline.audio.frames import FrameSpec
from pipeline.core.config import check, non_negative, positive
from pipeline.core.errors import AudioError, ConfigError
from pipeline.core.io import check_replaceable, marker_kind, output_lock, write_marker
from pipeline.core.progress import progress_bar
from pipeline.corpus.manifest import Utterance, audio_path, corpus_fingerprint, read_manifest
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.conv import frontend_spec
from pipeline.teacher.model import Teacher
from pipeline.teacher.sources import build_teacher, teacher_info
from storage import BACKENDS, CacheHeader
from storage.base import FRONTEND, HEADER, SCHEMA_VERSION
from storage.codecs import CODECS, FEATURE_ENCODINGS, FullConfig, TopKConfig, encode_feature
from storage.integrity import sha256_bytes, sha256_file
from storage.location import check_remote_replaceable, is_url, upload
from storage.wds_store import WdsConfig
from storage.zarr_store import ZarrConfig

log = logging.getLogger(__name__)

WORK_KIND = "cache-work"


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
        positive(self, "shard_utterances", "threads")
        non_negative(self, "batch_seconds", "loader_workers")
        check(self.feature_encoding in FEATURE_ENCODINGS, "feature_encoding",
              f"must be one of {FEATURE_ENCODINGS}")  # fmt: skip


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


def plan_shards(utts: list[Utterance], size: int) -> list[list[Utterance]]:
    """Cut the manifest (in order) into shards of about ``size`` utterances at content-defined
    boundaries: a shard ends after an utterance whose id hashes to a cut (probability 2/size)
    once it holds size/2, or at 2 x size. Removing or adding an utterance changes only its own
    shard (and rarely the next), so committed shards of a resumed run stay valid."""
    shards, current = [], []
    least = max(1, (size + 1) // 2)
    for utt in utts:
        current.append(utt)
        cut = int(sha256_bytes(utt.id.encode())[:12], 16) % size < 2
        if (len(current) >= least and cut) or len(current) >= 2 * size:
            shards.append(current)
            current = []
    return shards + [current] if current else shards


def part_name(settings: str, shard: list[Utterance]) -> str:
    """A part's name: a hash of everything its content depends on (teacher, codec, batching,
    and each utterance's id and audio), so a resumed run reuses exactly the unchanged parts."""
    rows = "\n".join(f"{u.id}\t{u.audio}\t{u.samples}\t{u.sample_rate}" for u in shard)
    return "part-" + sha256_bytes(f"{settings}\n{rows}".encode())[:20]


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


def _prepare_work(work: Path, parts: list[str]) -> None:
    """Keep the committed parts of this plan in ``work`` (ours: it carries our marker); remove
    other parts (another teacher, corpus or settings) and what a killed run left half-written.

    Raises:
        OutputError: ``work`` exists but is not this tool's work folder.
    """
    if work.exists() and marker_kind(work) != WORK_KIND:
        check_replaceable(work, WORK_KIND)  # refuses anything but an empty folder
    work.mkdir(parents=True, exist_ok=True)
    write_marker(work, WORK_KIND)
    wanted = set(parts)
    stale = [p for p in work.iterdir() if p.is_dir() and p.name not in wanted]
    if any(p.name.startswith("part-") for p in stale):
        log.warning("discarding %d parts in %s made for another plan", len(stale), work)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def run(cfg: CacheTeacherConfig, manifest: Path, out_dir: str | Path) -> CacheHeader:
    """Write the teacher cache for every utterance of ``manifest`` into ``out_dir``.

    ``out_dir`` may be an fsspec URL (``s3://bucket/cache``): the cache is then built, with the
    same resume and atomic commits, in a local staging folder under ``staging_root()`` and
    uploaded, header last. One run at a time writes an output (a lock beside it), and only an
    absent output or an earlier cache is ever replaced.

    Raises:
        OutputError: ``out_dir`` holds something that is not a cache, or another run writes it.
        AudioError: an unreadable audio file (named).
        CheckpointError: a teacher that cannot be loaded (named).
        ValueError: an utterance too short to give a single frame (named).
    """
    if not is_url(out_dir):
        check_replaceable(out_dir, "cache")
        with output_lock(out_dir):
            return _build(cfg, manifest, Path(out_dir))
    check_remote_replaceable(str(out_dir))
    local = staging_root() / hashlib.sha256(str(out_dir).encode()).hexdigest()[:16] / "cache"
    with output_lock(out_dir), output_lock(local):
        header = _build(cfg, manifest, local)
        log.info("uploading %s to %s", local, out_dir)
        upload(local, str(out_dir))
        shutil.rmtree(local)
    return header


def _build(cfg: CacheTeacherConfig, manifest: Path, out_dir: Path) -> CacheHeader:
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
    shards = plan_shards(utts, cfg.shard_utterances)
    work = out_dir.with_name(out_dir.name + ".partial")
    backend_cfg = getattr(cfg, cfg.backend)
    settings = json.dumps(
        {"header": {**header.to_json(), "corpus": ""}, "backend": repr(backend_cfg),
         "batch_seconds": cfg.batch_seconds, "device": cfg.teacher.device,
         "precision": cfg.teacher.precision},
        sort_keys=True,
    )  # fmt: skip
    parts = [work / part_name(settings, shard) for shard in shards]
    _prepare_work(work, [p.name for p in parts])
    todo = [i for i, part in enumerate(parts) if not (part / HEADER).is_file()]
    if len(todo) < len(shards):
        log.info("resuming: %d of %d shards already committed in %s",
                 len(shards) - len(todo), len(shards), work)  # fmt: skip

    start = time.perf_counter()
    with progress_bar() as bar:
        done_utts = len(utts) - sum(len(shards[i]) for i in todo)
        task = bar.add_task("cache-teacher", total=len(utts), completed=done_utts, info="")
        frames = 0

        def on_batch(n_utts: int, n_frames: int) -> None:
            nonlocal frames
            frames += n_frames
            rate = frames / (time.perf_counter() - start)
            bar.update(task, advance=n_utts, info=f"{rate:,.0f} frames/s")

        if cfg.scheduler:
            _run_on_dask(cfg, teacher, header, shards, parts, todo, manifest, on_batch)
        else:
            for i in todo:
                run_shard(teacher, cfg, header, shards[i], manifest, parts[i], on_batch)

    backend = BACKENDS[cfg.backend](backend_cfg)
    fe = teacher.encoder.feature_extractor
    files = {
        FRONTEND: save_safetensors(
            {k: v.detach().cpu().contiguous() for k, v in fe.state_dict().items()}
        )
    }
    frontend = {**frontend_spec(teacher.encoder.config), "normalize": teacher.normalize}
    header = dataclasses.replace(header, frontend=frontend)
    header = backend.merge(parts, out_dir, header, files)
    shutil.rmtree(work)
    log.info(
        "cached %d utterances, %d frames with %s",
        header.num_utterances,
        header.num_frames,
        header.teacher,
    )
    return header


def _run_on_dask(cfg, teacher, header, shards, parts, todo, manifest, on_batch) -> None:
    """Map the missing shards over a dask.distributed cluster; each worker gets the teacher once."""
    from distributed import Client, as_completed

    with Client(cfg.scheduler) as client:
        remote_teacher = client.scatter(teacher, broadcast=True)
        futures = {
            client.submit(
                run_shard, remote_teacher, cfg, header, shards[i], manifest.resolve(),
                parts[i].resolve(), key=f"cache-teacher-{parts[i].name}", pure=False,
            ): i
            for i in todo
        }  # fmt: skip
        for future in as_completed(futures):
            on_batch(len(shards[futures[future]]), future.result())
