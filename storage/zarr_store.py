"""Zarr v3 backend: flat arrays over all frames plus utterance ids and frame offsets.

Layout of the store (a Zarr group at the cache folder)::

    logits         (total_frames, C)  codec dtype, zstd, chunks of ``chunk_frames`` rows
    targets        (total_frames,)    int32
    utt_ids        (N,)               str
    frame_offsets  (N + 1,)           int64; utterance i is rows offsets[i]:offsets[i+1]

Readable with plain ``zarr.open_group(path)`` and ``dask.array.from_zarr(path, component=...)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from pipeline.io import atomic_dir, write_json
from storage.base import BACKENDS, HEADER, CacheFormatError, CacheHeader


@dataclass(frozen=True)
class ZarrConfig:
    """Attributes:
    chunk_frames: rows per chunk; writes are chunk-aligned.
    zstd_level: zstd compression level (1-22).
    """

    chunk_frames: int
    zstd_level: int


@BACKENDS.register
class ZarrBackend:
    name = "zarr"
    config_type = ZarrConfig

    def __init__(self, cfg: ZarrConfig) -> None:
        self.cfg = cfg

    def writer(self, path: Path, header: CacheHeader) -> ZarrWriter:
        return ZarrWriter(Path(path), header, self.cfg)

    @staticmethod
    def reader(path: Path, header: CacheHeader) -> ZarrReader:
        return ZarrReader(Path(path), header)


class ZarrWriter:
    """Buffers utterances and writes whole chunks; commits the folder on :meth:`close`."""

    name = "zarr"

    def __init__(self, path: Path, header: CacheHeader, cfg: ZarrConfig) -> None:
        self.header = dataclasses.replace(header, backend=self.name)
        self.cfg = cfg
        self._commit = atomic_dir(path)
        self.root = self._commit.__enter__()
        self._group = zarr.open_group(self.root, mode="w")
        compressors = [zarr.codecs.ZstdCodec(level=cfg.zstd_level)]
        c = header.num_classes
        self._arrays = {
            "logits": self._group.create_array(
                "logits", shape=(0, c), chunks=(cfg.chunk_frames, c),
                dtype=header.codec["dtype"], compressors=compressors,
            ),
            "targets": self._group.create_array(
                "targets", shape=(0,), chunks=(cfg.chunk_frames,), dtype="int32",
                compressors=compressors,
            ),
        }  # fmt: skip
        self._pending: dict[str, list[np.ndarray]] = {k: [] for k in self._arrays}
        self._pending_frames = 0
        self._written = 0
        self._ids: list[str] = []
        self._seen: set[str] = set()
        self._offsets = [0]

    def write(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        logits, targets = arrays["logits"], arrays["targets"]
        n = logits.shape[0]
        if logits.shape != (n, self.header.num_classes) or targets.shape != (n,) or n == 0:
            raise ValueError(
                f"{key}: expected logits (n, {self.header.num_classes}) and targets (n,), n > 0; "
                f"got {logits.shape} and {targets.shape}"
            )
        if key in self._seen:
            raise ValueError(f"{key}: written twice")
        self._seen.add(key)
        self._pending["logits"].append(logits.astype(self.header.codec["dtype"], copy=False))
        self._pending["targets"].append(targets.astype(np.int32, copy=False))
        self._pending_frames += n
        self._ids.append(key)
        self._offsets.append(self._offsets[-1] + n)
        if self._pending_frames >= self.cfg.chunk_frames:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write buffered rows: whole chunks only, unless ``final``."""
        if not self._pending_frames:
            return
        chunk = self.cfg.chunk_frames
        count = self._pending_frames if final else self._pending_frames // chunk * chunk
        start, stop = self._written, self._written + count
        for name, parts in self._pending.items():
            rows = np.concatenate(parts)
            array = self._arrays[name]
            array.resize((stop, *array.shape[1:]))
            array[start:stop] = rows[:count]
            self._pending[name] = [rows[count:]] if count < len(rows) else []
        self._written = stop
        self._pending_frames -= count

    def close(self) -> CacheHeader:
        """Flush, write ids and offsets, then the header; commit the folder atomically."""
        self._flush(final=True)
        ids = self._group.create_array("utt_ids", shape=(len(self._ids),), dtype=str)
        ids[:] = np.array(self._ids, dtype=str)
        offsets = self._group.create_array(
            "frame_offsets", shape=(len(self._offsets),), dtype="int64"
        )
        offsets[:] = np.array(self._offsets, dtype=np.int64)
        self.header = dataclasses.replace(
            self.header, num_utterances=len(self._ids), num_frames=self._written
        )
        self._group.attrs["hubert_kd"] = self.header.to_json()
        write_json(self.root / HEADER, self.header.to_json())
        self._commit.__exit__(None, None, None)
        return self.header

    def __enter__(self) -> ZarrWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._commit.__exit__(exc_type, exc, tb)  # removes the temp folder


class ZarrReader:
    """Random access by utterance id; ids and offsets are held in memory."""

    def __init__(self, path: Path, header: CacheHeader) -> None:
        self.header = header
        try:
            group = zarr.open_group(path, mode="r")
            self._ids = [str(k) for k in group["utt_ids"][:]]
            self._offsets = group["frame_offsets"][:]
            self._logits = group["logits"]
            self._targets = group["targets"]
        except (KeyError, FileNotFoundError, ValueError) as err:
            raise CacheFormatError(f"{path}: damaged zarr cache ({err})") from err
        if len(self._offsets) != len(self._ids) + 1 or self._offsets[-1] != self._logits.shape[0]:
            raise CacheFormatError(f"{path}: offsets do not match the stored frames")
        self._index = {k: i for i, k in enumerate(self._ids)}

    def keys(self) -> list[str]:
        return list(self._ids)

    def _span(self, key: str) -> tuple[int, int]:
        try:
            i = self._index[key]
        except KeyError:
            raise KeyError(f"utterance {key!r} is not in the cache") from None
        return int(self._offsets[i]), int(self._offsets[i + 1])

    def num_frames(self, key: str) -> int:
        start, stop = self._span(key)
        return stop - start

    def read(self, key: str, frames: slice | None = None) -> dict[str, np.ndarray]:
        start, stop = self._span(key)
        if frames is not None:
            lo, hi, step = frames.indices(stop - start)
            if step != 1:
                raise ValueError("frame slices must be contiguous")
            start, stop = start + lo, start + max(hi, lo)
        return {"logits": self._logits[start:stop], "targets": self._targets[start:stop]}
