"""Training data: utterance audio from the manifest joined with the teacher cache."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

from pipeline.audio import read_audio
from pipeline.frames import FrameSpec, lengths_to_mask
from pipeline.manifest import Utterance, audio_path
from storage import CacheFormatError, Reader


@dataclass
class Batch:
    """A padded batch.

    Attributes:
        ids: utterance ids, length B.
        wav: ``(B, S)`` float32 16 kHz audio, zero-padded.
        lengths: ``(B,)`` valid samples.
        teacher_logits: ``(B, T, C)`` float32 decoded teacher logits, zero on padding.
        targets: ``(B, T)`` int64 targets, 0 on padding.
        frame_mask: ``(B, T)`` True on valid frames.
    """

    ids: list[str]
    wav: torch.Tensor
    lengths: torch.Tensor
    teacher_logits: torch.Tensor
    targets: torch.Tensor
    frame_mask: torch.Tensor

    @property
    def num_frames(self) -> int:
        return int(self.frame_mask.sum())


class CachedUtterances(Dataset):
    """Utterance ``i``: its waveform and its cached teacher logits and targets.

    Raises (on access):
        CacheFormatError: the utterance is missing from the cache, or the cached frame count
            differs from what the frame stack gives for its audio.
    """

    def __init__(self, utts: list[Utterance], manifest: Path, cache: Reader, frames: FrameSpec):
        self.utts = utts
        self.manifest = Path(manifest)
        self.cache = cache
        self.frames = frames

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> dict:
        utt = self.utts[i]
        wav = read_audio(audio_path(utt, self.manifest))
        try:
            cached = self.cache.read(utt.id)
        except KeyError as err:
            raise CacheFormatError(f"{utt.id}: not in the cache; rerun cache-teacher") from err
        expected = self.frames.num_frames(len(wav))
        if len(cached["targets"]) != expected:
            raise CacheFormatError(
                f"{utt.id}: cache has {len(cached['targets'])} frames, audio gives {expected}; "
                "the cache was made from different audio or another frame stack"
            )
        logits, targets = self.cache.header.decode(cached)
        return {
            "id": utt.id,
            "wav": wav,
            "logits": torch.from_numpy(logits),
            "targets": torch.from_numpy(targets),
        }


def collate(items: list[dict]) -> Batch:
    """Pad a list of dataset items into a :class:`Batch`."""
    lengths = torch.tensor([len(it["wav"]) for it in items])
    frame_lengths = torch.tensor([len(it["targets"]) for it in items])
    return Batch(
        ids=[it["id"] for it in items],
        wav=pad_sequence([it["wav"] for it in items], batch_first=True),
        lengths=lengths,
        teacher_logits=pad_sequence([it["logits"] for it in items], batch_first=True),
        targets=pad_sequence([it["targets"] for it in items], batch_first=True),
        frame_mask=lengths_to_mask(frame_lengths),
    )


class LengthBatchSampler(Sampler[list[int]]):
    """Batches of similar-length utterances holding at most ``batch_seconds`` of padded audio.

    Each epoch shuffles within length buckets and shuffles the batch order; the sequence is a
    pure function of ``(seed, epoch)``. With ``shuffle=False`` batches are length-sorted.
    """

    def __init__(self, seconds: list[float], batch_seconds: float, seed: int, shuffle: bool = True):
        self.seconds = seconds
        self.batch_seconds = batch_seconds
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        noise = [rng.random() if self.shuffle else 0.0 for _ in self.seconds]
        order = sorted(
            range(len(self.seconds)), key=lambda i: (self.seconds[i] + 0.2 * noise[i], i)
        )
        batches: list[list[int]] = []
        batch: list[int] = []
        longest = 0.0
        for i in order:
            longest_if = max(longest, self.seconds[i])
            if batch and (len(batch) + 1) * longest_if > self.batch_seconds:
                batches.append(batch)
                batch, longest_if = [], self.seconds[i]
            batch.append(i)
            longest = longest_if
        if batch:
            batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
