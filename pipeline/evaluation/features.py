"""An upstream's frozen probe layers, computed once and streamed back batch by batch.

The upstream runs once over the probe's utterances; its layers (those as wide as its last,
as SUPERB weighs them) go, frame by frame, into a store written with the teacher cache's own
storage code (a features-only cache: one part per split, zstd-compressed zarr chunks, checked
on every read). Probe training then streams length-bucketed batches from it, so memory is
bounded by the batch, whatever the corpus.

Both passes pad each batch's time axis up to a multiple of a step (``evaluate.pad_seconds``),
so a corpus gives a few dozen batch shapes rather than one per batch: torch's CPU kernels
(oneDNN) and the allocator keep state per shape, and that state, not the data, is what made
the peak grow with the corpus. Every valid frame is computed as without the padding.
"""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from pipeline.audio.batching import length_batches
from pipeline.audio.files import SAMPLE_RATE
from pipeline.core.errors import OutputError
from pipeline.core.progress import progress_bar
from pipeline.corpus.manifest import Utterance, audio_batches
from pipeline.evaluation.probe import ProbeBatch
from pipeline.evaluation.upstream import Upstream
from storage import CacheHeader, CacheReader, finalize, open_cache, open_part, prepare_location
from storage.features import encode_feature
from storage.header import SCHEMA_VERSION
from storage.zarr_store import ZarrConfig

log = logging.getLogger(__name__)

STORE = ZarrConfig(chunk_frames=1024, zstd_level=1)


def write_store(
    upstream: Upstream,
    splits: dict[str, list[Utterance]],
    manifest: Path,
    path: Path,
    batch_seconds: float,
    encoding: str,
    pad_seconds: float = 0.0,
) -> CacheHeader:
    """Run ``upstream`` over each split's utterances and store its probe layers, one part per
    split (``split-<name>``), each layer a feature ``layer_<i>`` in ``encoding``; each batch
    of audio is padded to a multiple of ``pad_seconds``."""
    prepare_location(path)
    second = torch.zeros(1, SAMPLE_RATE)
    layers, _ = upstream.probe_layers(second, torch.tensor([SAMPLE_RATE]))  # (1, L, T, D)
    header = _header(upstream, layers.shape[1], layers.shape[3], encoding)
    _check_room(path, header, layers.shape[2] * sum(u.seconds for v in splits.values() for u in v))
    with progress_bar() as bar:
        task = bar.add_task(f"features {upstream.name}", total=sum(map(len, splits.values())),
                            info="")  # fmt: skip
        for name, utts in splits.items():
            with open_part(path, f"split-{name}", header, STORE) as part:
                batches = _layers(upstream, utts, manifest, batch_seconds,
                                  round(pad_seconds * SAMPLE_RATE))  # fmt: skip
                for utt, layers in batches:
                    fields = {}
                    for i, x in enumerate(layers):
                        fields.update(encode_feature(f"layer_{i}", x, encoding))
                    part.write(utt.id, fields)
                    bar.update(task, advance=1)
    return finalize(path, header, [f"split-{n}" for n in splits], None)


def _check_room(path: Path, header: CacheHeader, frames: float) -> None:
    """Log the disk the features need; refuse before writing when ``path`` lacks it.

    Raises:
        OutputError: less free space than the features need (set ``evaluate.work_dir``).
    """
    need = frames * header.bytes_per_frame()
    free = shutil.disk_usage(path).free
    log.info(
        "probe features: %.0f frames x %d bytes = %.2f GB in %s (removed afterwards; %.1f GB "
        "free)", frames, header.bytes_per_frame(), need / 1e9, path, free / 1e9,
    )  # fmt: skip
    if need > free:
        raise OutputError(
            f"{path}: the probe features need {need / 1e9:.1f} GB and {free / 1e9:.1f} GB are "
            "free there; set evaluate.work_dir (or $TMPDIR) to a scratch folder with room"
        )


def pad_to_multiple(x: torch.Tensor, multiple: int, dim: int) -> torch.Tensor:
    """``x`` zero-padded at the end of axis ``dim`` (>= 0) to a multiple of ``multiple``."""
    if multiple <= 1 or x.shape[dim] % multiple == 0:
        return x
    return F.pad(x, [0, 0] * (x.dim() - 1 - dim) + [0, -x.shape[dim] % multiple])


def _layers(upstream: Upstream, utts: list[Utterance], manifest: Path, batch_seconds: float,
            pad_samples: int):  # fmt: skip
    """``(utterance, layers (L, T, D) float32 numpy)``, length-sorted batch by batch."""
    for group, wav, lengths in audio_batches(utts, manifest, batch_seconds):
        wav = pad_to_multiple(wav, pad_samples, dim=1)
        layers, frame_lengths = upstream.probe_layers(wav, lengths)
        layers = layers.float().cpu().numpy()
        for i, (utt, n) in enumerate(zip(group, frame_lengths.tolist(), strict=True)):
            yield utt, layers[i, :, :n]


def _header(upstream: Upstream, layers: int, dim: int, encoding: str) -> CacheHeader:
    return CacheHeader(
        schema_version=SCHEMA_VERSION, backend="zarr", teacher=upstream.name, fingerprint="",
        corpus="", num_classes=0, frame_rate=SAMPLE_RATE / 320, frame_kernels=[],
        frame_strides=[], codec=None, target_source="",
        features={f"layer_{i}": {"dim": dim, "encoding": encoding} for i in range(layers)},
    )  # fmt: skip


class StoreBatches:
    """Batches of one split of a probe store: blocks read in a seeded order, a pool of
    ``pool`` blocks length-bucketed into batches of ``batch_frames`` padded frames, each padded
    to a multiple of ``pad_seconds``."""

    def __init__(
        self, path: Path, split: str, batch_frames: int, pad_seconds: float = 0.0, pool: int = 8
    ) -> None:
        self.reader: CacheReader = open_cache(path)
        self.split = split
        self.batch_frames = batch_frames
        self.pad_frames = round(pad_seconds * self.reader.header.frame_rate)
        self.pool = pool
        self.blocks = self.reader.blocks(part=f"split-{split}")
        spec = self.reader.header.features
        self.shape = (len(spec), next(iter(spec.values()))["dim"])

    def epoch(self, seed: int | None) -> Iterator[ProbeBatch]:
        """Every utterance of the split once; ``seed=None`` keeps storage order."""
        blocks = list(self.blocks)
        rng = random.Random(seed)
        if seed is not None:
            rng.shuffle(blocks)
        for start in range(0, len(blocks), self.pool):
            rows = [row for b in blocks[start : start + self.pool]
                    for row in self.reader.read_block(b)]  # fmt: skip
            groups = length_batches(rows, lambda r: len(next(iter(r[1].values()))),
                                    self.batch_frames)  # fmt: skip
            if seed is not None:
                rng.shuffle(groups)
            for group in groups:
                yield self._batch(group)

    def _batch(self, group: list[tuple[str, dict[str, np.ndarray]]]) -> ProbeBatch:
        decoded = [self.reader.header.decode_features(fields) for _, fields in group]
        names = [f"layer_{i}" for i in range(self.shape[0])]
        per_utt = [torch.stack([d[n] for n in names], 1) for d in decoded]
        lengths = torch.tensor([len(x) for x in per_utt])
        layers = pad_to_multiple(pad_sequence(per_utt, batch_first=True), self.pad_frames, dim=1)
        layers = layers.transpose(1, 2)  # (B, L, T, D)
        return ProbeBatch([key for key, _ in group], layers.contiguous(), lengths)
