"""Training data: the teacher cache streamed block by block, joined with utterance audio."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.audio.batching import length_batches
from pipeline.corpus.manifest import Utterance, read_utterance
from pipeline.nn.frames import FrameSpec
from pipeline.training.batches import Batch, collate
from storage import CacheFormatError, open_cache
from storage.location import location


class CacheBatches(IterableDataset):
    """Length-bucketed batches of some utterances, streamed from the teacher cache, their
    teacher logits as the cache encodes them (decode them where the student trains:
    ``batch.decode_teacher(self.codec, self.argmax_targets)``).

    The cache's storage blocks (runs of chunks, tar shards) are shuffled per epoch and dealt to
    ``streams`` data streams, of which this is number ``stream``, and within it to DataLoader
    workers, each block to exactly one stream and worker, so no utterance repeats within an
    epoch and none is left out. Utterances are read block by block (each chunk decompressed
    once), joined with their audio, collected ``pool`` at a time (the shuffle buffer), sorted
    by length and cut into batches of at most ``batch_seconds`` of padded audio. The stream is
    a pure function of ``(seed, epoch, stream, streams, number of workers)``; with
    ``shuffle=False`` batches are length-sorted.

    Raises:
        CacheFormatError: an utterance missing from the cache, or whose cached frame count
            differs from what the frame stack gives for its audio.
    """

    def __init__(
        self,
        cache: str | Path,
        utts: list[Utterance],
        manifest: Path,
        *,
        batch_seconds: float,
        seed: int,
        shuffle: bool,
        pool: int,
        stream: int = 0,
        streams: int = 1,
    ) -> None:
        self.cache = location(cache)  # a folder or an fsspec URL
        self.utts = {u.id: u for u in utts}
        self.manifest = Path(manifest)
        self.batch_seconds = batch_seconds
        self.seed = seed
        self.shuffle = shuffle
        self.pool = max(pool, 1) if shuffle else max(len(utts), 1)
        self.stream, self.streams = stream, streams
        self.epoch, self.skip = 0, 0
        reader = open_cache(self.cache)
        self.codec = reader.codec  # batches carry the logits encoded: decode_teacher(codec)
        self.argmax_targets = reader.header.argmax_targets
        self.codec_fields = list(self.codec.fields(reader.header.num_classes))
        stored = set(reader.keys())
        missing = [u for u in self.utts if u not in stored]
        if missing:
            raise CacheFormatError(
                f"{missing[0]}: not in the cache {self.cache} ({len(missing)} missing); "
                "rerun cache-teacher"
            )

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Stream epoch ``epoch``, leaving out its first ``skip`` batches cheaply (their audio
        is never read): how a resumed run gets back to its data position. Batches are composed
        from manifest lengths, so skipping needs only the cache."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[Batch]:
        reader = open_cache(self.cache)
        header = reader.header
        frames = FrameSpec(tuple(header.frame_kernels), tuple(header.frame_strides))
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if self.skip and workers > 1:
            raise ValueError("skipping batches is exact only without DataLoader workers")
        blocks = [b for b in reader.blocks() if any(k in self.utts for k in b)]
        if self.shuffle:
            random.Random(f"{self.seed}/{self.epoch}").shuffle(blocks)
        lane = f"{self.stream}/{worker}" if self.streams > 1 else f"{worker}"
        rng = random.Random(f"{self.seed}/{self.epoch}/{lane}")
        pool: list[tuple[Utterance, dict]] = []
        emitted = 0
        mine = blocks[self.stream :: self.streams][worker::workers]
        for block in mine + [None]:  # None: flush the last pool
            rows = [] if block is None else reader.read_block(block)
            pool += [(self.utts[key], fields) for key, fields in rows if key in self.utts]
            if pool and (len(pool) >= self.pool or block is None):
                for batch in self._batches(pool, rng):
                    if emitted >= self.skip:
                        yield collate(
                            [self._item(utt, fields, header, frames) for utt, fields in batch]
                        )
                    emitted += 1
                pool = []

    def _item(self, utt: Utterance, fields: dict, header, frames: FrameSpec) -> dict:
        wav = read_utterance(utt, self.manifest)
        expected = frames.num_frames(len(wav))
        if len(fields["targets"]) != expected:
            raise CacheFormatError(
                f"{utt.id}: cache has {len(fields['targets'])} frames, audio gives {expected}; "
                "the cache was made from different audio or another frame stack"
            )
        return {
            "id": utt.id,
            "wav": wav,
            "teacher": {k: torch.from_numpy(fields[k]) for k in self.codec_fields},
            "targets": torch.from_numpy(fields["targets"].astype(np.int64)),
            "features": header.decode_features(fields),
        }

    def _batches(self, pool: list[tuple[Utterance, dict]], rng: random.Random) -> list[list]:
        jitter = {utt.id: rng.random() * 0.2 if self.shuffle else 0.0 for utt, _ in pool}
        batches = length_batches(
            pool,
            seconds=lambda row: row[0].seconds,
            batch_seconds=self.batch_seconds,
            sort_key=lambda row: (row[0].seconds + jitter[row[0].id], row[0].id),
        )
        if self.shuffle:
            rng.shuffle(batches)
        return batches
