"""Upstreams' frozen probe layers, computed once and streamed back batch by batch.

The upstreams of a model (a student's training seeds) run once over the probe's utterances,
together (each batch of audio read once, a shared frozen front end computed once); each one's
layers (those as wide as its last, as SUPERB weighs them) go, frame by frame, into a store of
its own, written with the teacher cache's own
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
from contextlib import ExitStack
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

STORE = ZarrConfig(chunk_frames=8192, zstd_level=1)


def write_stores(
    upstreams: dict[object, Upstream],
    splits: dict[str, list[Utterance]],
    manifest: Path,
    paths: dict[object, Path],
    batch_seconds: float,
    encoding: str,
    pad_seconds: float = 0.0,
) -> None:
    """Run every upstream over each split's utterances, in one pass over the audio (each batch
    read once for all: upstreams that share a frozen front end compute it once,
    :func:`~pipeline.evaluation.upstream.student_upstreams`), and store each one's probe
    layers in its own store at ``paths[key]``: one part per split (``split-<name>``), each layer
    a feature ``layer_<i>`` in ``encoding``. Each batch of audio is padded to a multiple of
    ``pad_seconds``."""
    headers = {}
    for key, upstream in upstreams.items():
        prepare_location(paths[key])
        second = torch.zeros(1, SAMPLE_RATE)
        layers, _ = upstream.probe_layers(second, torch.tensor([SAMPLE_RATE]))  # (1, L, T, D)
        headers[key] = _header(upstream, layers.shape[1], layers.shape[3], encoding)
    rate = SAMPLE_RATE / 320  # the frame rate every upstream's layers come at (_header)
    frames = sum(u.seconds for v in splits.values() for u in v) * rate
    _check_room(next(iter(paths.values())), list(headers.values()), frames)
    name = next(iter(upstreams.values())).name
    with progress_bar() as bar:
        task = bar.add_task(f"features {name}" + (f" ({len(upstreams)} seeds)" if
                            len(upstreams) > 1 else ""), total=sum(map(len, splits.values())),
                            info="")  # fmt: skip
        for split, utts in splits.items():
            with ExitStack() as stack:
                parts = {k: stack.enter_context(open_part(paths[k], f"split-{split}", headers[k],
                                                          STORE)) for k in upstreams}  # fmt: skip
                batches = audio_batches(utts, manifest, batch_seconds)
                for group, wav, lengths in batches:
                    wav = pad_to_multiple(wav, round(pad_seconds * SAMPLE_RATE), dim=1)
                    fronts = _shared_fronts(upstreams.values(), wav, lengths)
                    for key, upstream in upstreams.items():
                        front = fronts.get(id(upstream.front))
                        for utt, layers in _layers(upstream, group, wav, lengths, front):
                            fields = {}
                            for i, x in enumerate(layers):
                                fields.update(encode_feature(f"layer_{i}", x, encoding))
                            parts[key].write(utt.id, fields)
                    bar.update(task, advance=len(group))
    for key in upstreams:
        finalize(paths[key], headers[key], [f"split-{n}" for n in splits], None)


def _check_room(path: Path, headers: list[CacheHeader], frames: float) -> None:
    """Log the disk the features of ``frames`` frames in stores of ``headers`` need; refuse
    before writing when ``path``'s disk lacks it.

    Raises:
        OutputError: less free space than the features need (set ``evaluate.work_dir``).
    """
    size = sum(h.bytes_per_frame() for h in headers)
    need = frames * size
    free = shutil.disk_usage(path).free
    log.info(
        "probe features: %.0f frames x %d bytes = %.2f GB in %s (removed afterwards; %.1f GB "
        "free)", frames, size, need / 1e9, path, free / 1e9,
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


@torch.inference_mode()
def _shared_fronts(upstreams, wav: torch.Tensor, lengths: torch.Tensor) -> dict[int, torch.Tensor]:
    """The output of each shared front end on a batch of audio, computed once, by its id."""
    fronts = {id(u.front): u.front for u in upstreams if u.front is not None}
    return {key: front(wav, lengths) for key, front in fronts.items()}


def _layers(
    upstream: Upstream,
    group: list[Utterance],
    wav: torch.Tensor,
    lengths: torch.Tensor,
    front: torch.Tensor | None = None,
):
    """``(utterance, layers (L, T, D) float32 numpy)`` for each utterance of a batch of audio
    (``front``: the output of the upstream's shared front end on it, if it has one)."""
    layers, frame_lengths = upstream.probe_layers(wav, lengths, front)
    layers = layers.float().cpu().numpy()
    for i, (utt, n) in enumerate(zip(group, frame_lengths.tolist(), strict=True)):
        yield utt, layers[i, :, :n]


def _header(upstream: Upstream, layers: int, dim: int, encoding: str) -> CacheHeader:
    return CacheHeader(
        schema_version=SCHEMA_VERSION, backend="zarr", teacher=upstream.name, fingerprint="",
        corpus="", num_classes=0, frame_rate=SAMPLE_RATE / 320, frame_kernels=[],
        frame_strides=[], codec=None, target_source="",
        features={f"layer_{i}": {"dim": dim, "encoding": encoding} for i in range(layers)},
        teacher_class="",
    )  # fmt: skip


class StoreBatches:
    """Batches of one split of a probe store (one upstream: ``layers (1, B, L, T, D)``): blocks
    read in a seeded order, a pool of ``pool`` blocks length-bucketed into batches of
    ``batch_frames`` padded frames, each padded to a multiple of ``pad_seconds``."""

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
        return ProbeBatch([key for key, _ in group], layers[None].contiguous(), lengths)


class StackedBatches:
    """Batches of one split of several probe stores at once, the upstreams of one model (their
    stores hold the same utterances, so the same seed gives the same batches in each): each
    batch holds the same utterances' layers from every store, ``(S, B, L, T, D)``."""

    def __init__(self, paths: list[Path], split: str, batch_frames: int, pad_seconds: float = 0.0):
        self.stores = [StoreBatches(p, split, batch_frames, pad_seconds) for p in paths]
        self.shape = self.stores[0].shape

    def epoch(self, seed: int | None) -> Iterator[ProbeBatch]:
        """Every utterance of the split once; ``seed=None`` keeps storage order."""
        for parts in zip(*(store.epoch(seed) for store in self.stores), strict=True):
            if any(p.keys != parts[0].keys for p in parts):
                raise AssertionError("the stores of one model hold other utterances")
            yield ProbeBatch(parts[0].keys, torch.cat([p.layers for p in parts]), parts[0].lengths)
