"""Stage `cache_teacher`: run the teacher once over the corpus, write logits and targets."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.audio import SAMPLE_RATE, read_audio
from pipeline.frames import FrameSpec
from pipeline.manifest import Utterance, audio_path, read_manifest
from pipeline.progress import progress_bar
from pipeline.teacher import TeacherConfig, build_teacher
from storage import BACKENDS, CacheHeader
from storage.base import SCHEMA_VERSION
from storage.zarr_store import ZarrConfig

log = logging.getLogger(__name__)

LOGIT_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class CacheTeacherConfig:
    """The `cache_teacher` section of params.yaml.

    Attributes:
        teacher: which teacher and head to run.
        backend: registered cache backend; its settings are the section of the same name.
        logits_dtype: ``float16`` or ``float32`` storage of the logits.
        batch_seconds: audio per inference batch (utterances are length-sorted first).
        threads: torch intra-op threads.
        loader_workers: processes decoding audio ahead of the teacher (0: in the main process).
        zarr: settings of the ``zarr`` backend.
    """

    teacher: TeacherConfig
    backend: str
    logits_dtype: str
    batch_seconds: float
    threads: int
    loader_workers: int
    zarr: ZarrConfig

    def __post_init__(self) -> None:
        BACKENDS[self.backend]
        if self.logits_dtype not in LOGIT_DTYPES:
            raise ValueError(f"logits_dtype must be one of {LOGIT_DTYPES}")


def length_batches(utts: list[Utterance], batch_seconds: float) -> Iterator[list[Utterance]]:
    """Length-sorted batches of at most ``batch_seconds`` of audio (at least one utterance)."""
    batch: list[Utterance] = []
    for utt in sorted(utts, key=lambda u: (u.seconds, u.id)):
        if batch and (len(batch) + 1) * utt.seconds > batch_seconds:
            yield batch
            batch = []
        batch.append(utt)
    if batch:
        yield batch


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
                raise ValueError(f"{utt.id}: {len(wav)} samples is too short for one frame")
            wavs.append(wav)
        return wavs


def _write(writer, batch: list[Utterance], outputs) -> None:
    for utt, (logits, targets) in zip(batch, outputs, strict=True):
        writer.write(utt.id, {"logits": logits.numpy(), "targets": targets.numpy()})


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run(cfg: CacheTeacherConfig, manifest: Path, out_dir: Path) -> CacheHeader:
    """Write the teacher cache for every utterance of ``manifest`` into ``out_dir``.

    Raises:
        AudioError: an unreadable audio file (named).
        ValueError: an utterance too short to give a single frame (named).
    """
    torch.set_num_threads(cfg.threads)
    utts = read_manifest(manifest)

    def fit_audio():
        train = [u for u in utts if u.split == "train"] or utts
        step = max(1, len(train) // cfg.teacher.kmeans.fit_utterances)
        return (
            read_audio(audio_path(u, manifest))
            for u in train[::step][: cfg.teacher.kmeans.fit_utterances]
        )

    teacher = build_teacher(cfg.teacher, fit_audio)
    header = CacheHeader(
        schema_version=SCHEMA_VERSION,
        backend=cfg.backend,
        teacher=teacher.description,
        fingerprint=teacher.fingerprint(),
        corpus=file_sha256(manifest),
        num_classes=teacher.num_classes,
        frame_rate=teacher.frames.frame_rate(SAMPLE_RATE),
        frame_kernels=list(teacher.frames.kernels),
        frame_strides=list(teacher.frames.strides),
        codec={"name": "full", "dtype": cfg.logits_dtype},
        target_source=teacher.target_source,
        num_utterances=0,
        num_frames=0,
    )
    backend = BACKENDS[cfg.backend](getattr(cfg, cfg.backend))
    batches = list(length_batches(utts, cfg.batch_seconds))
    # Audio is decoded by loader workers and cache writes (zstd) run on a thread, both
    # overlapping the teacher's forward passes.
    loader = DataLoader(
        BatchAudio(batches, manifest, teacher.frames),
        batch_size=None,
        num_workers=cfg.loader_workers,
        prefetch_factor=4 if cfg.loader_workers else None,
    )
    start, frames = time.perf_counter(), 0
    with (
        backend.writer(out_dir, header) as writer,
        progress_bar() as bar,
        ThreadPoolExecutor(1) as io,
    ):
        task = bar.add_task("cache-teacher", total=len(utts), info="")
        pending = None
        for batch, wavs in zip(batches, loader, strict=True):
            outputs = teacher.outputs(wavs)
            if pending is not None:
                pending.result()  # keeps order and bounds memory to one batch in flight
            pending = io.submit(_write, writer, batch, outputs)
            frames += sum(len(logits) for logits, _ in outputs)
            rate = frames / (time.perf_counter() - start)
            bar.update(task, advance=len(batch), info=f"{rate:,.0f} frames/s")
        if pending is not None:
            pending.result()
        header = writer.close()
    log.info(
        "cached %d utterances, %d frames with %s",
        header.num_utterances,
        header.num_frames,
        header.teacher,
    )
    return header
