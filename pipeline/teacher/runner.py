"""Running the teacher over one shard and committing it as a part, here or in a dask worker."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.audio.batching import length_batches
from pipeline.core.errors import AudioError, CheckpointError
from pipeline.corpus.manifest import Utterance, audio_path, read_utterance
from pipeline.nn.frames import FrameSpec
from pipeline.teacher.caching import CacheTeacherConfig, Shard
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.model import Teacher
from pipeline.teacher.sources import build_teacher
from storage import CacheHeader, open_part
from storage.codecs import Codec
from storage.features import encode_feature


@dataclass(frozen=True)
class TeacherRecipe:
    """What a worker process needs to load the very teacher the client loaded: its settings,
    the k-means centroids fitted in the client (if any) and the fingerprint to check."""

    cfg: TeacherConfig
    centroids: np.ndarray | None
    fingerprint: str

    @classmethod
    def of(cls, teacher: Teacher) -> TeacherRecipe:
        km = teacher.kmeans
        centroids = km.centroids.cpu().numpy() if km is not None else None
        return cls(teacher.cfg, centroids, teacher.fingerprint())


_LOADED: dict[str, Teacher] = {}  # per worker process: each recipe's teacher, loaded once


def teacher_from(recipe: TeacherRecipe) -> Teacher:
    """The recipe's teacher, loaded once per process (on its device: one GPU per worker).

    Raises:
        CheckpointError: this worker loads a teacher with other weights (another file).
    """
    if recipe.fingerprint not in _LOADED:
        teacher = build_teacher(recipe.cfg, centroids=recipe.centroids)
        if teacher.fingerprint() != recipe.fingerprint:
            raise CheckpointError(
                f"{recipe.cfg.source}: this worker loads a teacher other than the client's "
                "(another file at that path?); workers must see the same teacher"
            )
        _LOADED[recipe.fingerprint] = teacher
    return _LOADED[recipe.fingerprint]


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
            wav = read_utterance(utt, self.manifest)
            if self.frames.num_frames(len(wav)) < 1:
                raise AudioError(
                    f"{audio_path(utt, self.manifest)}: {len(wav)} samples at 16 kHz is too "
                    f"short for one teacher frame ({utt.id}); drop it from the corpus"
                )
            wavs.append(wav)
        return wavs


def run_shard(
    teacher: Teacher,
    cfg: CacheTeacherConfig,
    header: CacheHeader,
    codec: Codec,
    shard: Shard,
    manifest: Path,
    cache: str | Path,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Run the teacher over one shard and commit it as its part of the cache at ``cache``, its
    logits stored by ``codec`` (with its fitted constants).

    Loader workers decode audio ahead; each batch's logits and features are encoded on the
    teacher's device (top-k, int8) and only the encoded fields cross to the host, in one
    non-blocking copy into pinned memory; a writer thread waits for that copy and compresses
    and writes while the teacher runs the next batch. ``on_batch(utterances, frames)``
    reports progress. Returns the frames written.
    """
    torch.set_num_threads(cfg.threads)
    target_dtype = getattr(torch, header.target_dtype)
    batches = length_batches(
        shard.utts, lambda u: u.seconds, cfg.batch_seconds, sort_key=lambda u: (u.seconds, u.id)
    )
    pinned = teacher.device.type == "cuda"
    loader = DataLoader(
        BatchAudio(batches, manifest, teacher.frames),
        batch_size=None,
        num_workers=cfg.loader_workers,
        prefetch_factor=4 if cfg.loader_workers else None,
        pin_memory=pinned,
    )

    def encode(wavs: list[torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[int], object]:
        logits, targets, feats, lengths = teacher.forward_batch(wavs, tuple(cfg.features))
        fields = {"targets": targets.to(target_dtype), **codec.encode(logits)}
        for name, x in feats.items():
            fields.update(encode_feature(name, x, cfg.feature_encoding))
        host = {k: v.to("cpu", non_blocking=pinned) for k, v in fields.items()}
        done = torch.cuda.Event() if pinned else None
        if done is not None:
            done.record()
        return host, lengths.tolist(), done

    def write(batch: list[Utterance], host: dict, lengths: list[int], done) -> None:
        if done is not None:
            done.synchronize()
        arrays = {k: v.numpy() for k, v in host.items()}
        for i, (utt, n) in enumerate(zip(batch, lengths, strict=True)):
            part.write(utt.id, {k: v[i, :n] for k, v in arrays.items()})

    frames = 0
    with open_part(cache, shard.name, header, cfg.backend.cfg) as part, ThreadPoolExecutor(1) as io:
        pending = None
        for batch, wavs in zip(batches, loader, strict=True):
            try:
                host, lengths, done = encode([w.to(teacher.device) for w in wavs])
            except ValueError as err:
                names = ", ".join(u.id for u in batch[:3]) + (" ..." if len(batch) > 3 else "")
                raise ValueError(f"{names}: {err}") from err
            if pending is not None:
                pending.result()  # keeps order and bounds memory to one batch in flight
            pending = io.submit(write, batch, host, lengths, done)
            frames += sum(lengths)
            if on_batch is not None:
                on_batch(len(batch), sum(lengths))
        if pending is not None:
            pending.result()
    return frames


def run_shard_on_worker(recipe: TeacherRecipe, *args) -> int:
    """:func:`run_shard` in a dask worker, with the teacher the recipe loads there."""
    return run_shard(teacher_from(recipe), *args)
