"""Stage `cache_teacher`: run the teacher once over the corpus, write logits and targets."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.audio import SAMPLE_RATE, read_audio
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
        zarr: settings of the ``zarr`` backend.
    """

    teacher: TeacherConfig
    backend: str
    logits_dtype: str
    batch_seconds: float
    threads: int
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
    start, frames = time.perf_counter(), 0
    with backend.writer(out_dir, header) as writer, progress_bar() as bar:
        task = bar.add_task("cache-teacher", total=len(utts), info="")
        for batch in length_batches(utts, cfg.batch_seconds):
            wavs = [read_audio(audio_path(u, manifest)) for u in batch]
            for utt, wav in zip(batch, wavs, strict=True):
                if teacher.frames.num_frames(len(wav)) < 1:
                    raise ValueError(f"{utt.id}: {len(wav)} samples is too short for one frame")
            for utt, (logits, targets) in zip(batch, teacher.outputs(wavs), strict=True):
                writer.write(utt.id, {"logits": logits.numpy(), "targets": targets.numpy()})
                frames += len(logits)
            rate = frames / (time.perf_counter() - start)
            bar.update(task, advance=len(batch), info=f"{rate:,.0f} frames/s")
        header = writer.close()
    log.info(
        "cached %d utterances, %d frames with %s",
        header.num_utterances,
        header.num_frames,
        header.teacher,
    )
    return header
