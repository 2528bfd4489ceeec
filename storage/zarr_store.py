"""Zarr v3 backend: each part is a Zarr group of flat arrays over its frames, plus utterance ids
and frame offsets.

Layout of a part (``parts/<name>/`` of the cache)::

    targets        (frames,)          int16 while C < 32768, else int32
    <codec fields> (frames, ...)      logits (frames, C) for the full codec, coords
                                      (frames, rank) for projection, codes (frames, B) for pq
    feat_<name>    (frames, D)        cached teacher features (+ feat_<name>_scale for int8)
    utt_ids        (N,)               str
    frame_offsets  (N + 1,)           int64; utterance i is rows offsets[i]:offsets[i+1]

Every per-frame array is zstd-compressed in chunks of ``chunk_frames`` rows. Readable with
plain ``zarr.open_group("cache/parts/<name>")`` and ``dask.array.from_zarr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from pipeline.core.errors import CacheFormatError
from pipeline.core.hashing import sha256_bytes
from storage.base import BACKENDS, check_utterance
from storage.header import CacheHeader, PartContents
from storage.integrity import check_bytes
from storage.location import is_url


class HashingStore(WrapperStore):
    """A zarr store that records the sha256 of every object as it is written."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.checksums: dict[str, str] = {}

    async def set(self, key: str, value) -> None:
        self.checksums[key] = sha256_bytes(value.to_bytes())
        await self._store.set(key, value)

    async def _set_many(self, values) -> None:
        for key, value in values:
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        self.checksums.pop(key, None)
        await self._store.delete(key)


class VerifyingStore(WrapperStore):
    """A read-only zarr store that checks every object it serves against the header's sha256
    (so a damaged, truncated or deleted chunk stops the read, naming the file)."""

    def __init__(self, store, checksums: dict[str, str], where: str) -> None:
        super().__init__(store)
        self.expected = checksums
        self.where = where

    def _with_store(self, store):
        return type(self)(store, self.expected, self.where)

    async def get(self, key: str, prototype, byte_range=None):
        if key not in self.expected:
            return await self._store.get(key, prototype, byte_range)
        value = await self._store.get(key, prototype)
        data = check_bytes(
            f"{self.where}/{key}", None if value is None else value.to_bytes(), self.expected[key]
        )
        if byte_range is None:
            return value
        if isinstance(byte_range, RangeByteRequest):
            data = data[byte_range.start : byte_range.end]
        elif isinstance(byte_range, OffsetByteRequest):
            data = data[byte_range.offset :]
        elif isinstance(byte_range, SuffixByteRequest):
            data = data[-byte_range.suffix :]
        return prototype.buffer.from_bytes(data)

    async def get_partial_values(self, prototype, key_ranges):
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]


def open_verified_group(path: str | Path, checksums: dict[str, str]) -> zarr.Group:
    """The zarr group at ``path`` (a folder or an fsspec URL), every read checked."""
    store = (
        FsspecStore.from_url(str(path), read_only=True)
        if is_url(path)
        else LocalStore(Path(path), read_only=True)
    )
    return zarr.open_group(store=VerifyingStore(store, checksums, str(path)), mode="r")


@dataclass(frozen=True)
class ZarrConfig:
    """Attributes:
    chunk_frames: rows per chunk; writes are chunk-aligned.
    zstd_level: zstd compression level (1-22).
    """

    chunk_frames: int
    zstd_level: int

    def __post_init__(self) -> None:
        if self.chunk_frames < 1 or not 1 <= self.zstd_level <= 22:
            raise ValueError("zarr.chunk_frames must be >= 1 and zstd_level in 1..22")


@BACKENDS.register
class ZarrBackend:
    name = "zarr"
    config_type = ZarrConfig

    def __init__(self, cfg: ZarrConfig) -> None:
        self.cfg = cfg

    def writer(self, folder: Path, header: CacheHeader) -> ZarrWriter:
        return ZarrWriter(Path(folder), header, self.cfg)

    @staticmethod
    def reader(location: str | Path, part: PartContents, header: CacheHeader) -> ZarrReader:
        return ZarrReader(location, part, header)


class ZarrWriter:
    """Buffers utterances and writes whole chunks into the folder it is given."""

    def __init__(self, folder: Path, header: CacheHeader, cfg: ZarrConfig) -> None:
        self.cfg = cfg
        self._store = HashingStore(LocalStore(folder))
        self._group = zarr.open_group(store=self._store, mode="w")
        compressors = [zarr.codecs.ZstdCodec(level=cfg.zstd_level)]
        self._fields = header.fields()
        self._arrays = {
            name: self._group.create_array(
                name, shape=(0, *shape), chunks=(cfg.chunk_frames, *shape), dtype=dtype,
                compressors=compressors,
            )
            for name, (shape, dtype) in self._fields.items()
        }  # fmt: skip
        self._pending: dict[str, list[np.ndarray]] = {k: [] for k in self._arrays}
        self._pending_frames = 0
        self._written = 0
        self._ids: list[str] = []
        self._seen: set[str] = set()
        self._offsets = [0]

    def write(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        n = check_utterance(self._fields, self._seen, key, arrays)
        for name, (_, dtype) in self._fields.items():
            self._pending[name].append(arrays[name].astype(dtype, copy=False))
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

    def close(self) -> tuple[int, dict[str, str]]:
        """Flush, write ids and offsets; returns the frames and the checksums as written."""
        self._flush(final=True)
        ids = self._group.create_array("utt_ids", shape=(len(self._ids),), dtype=str)
        ids[:] = np.array(self._ids, dtype=str)
        offsets = self._group.create_array(
            "frame_offsets", shape=(len(self._offsets),), dtype="int64"
        )
        offsets[:] = np.array(self._offsets, dtype=np.int64)
        return self._written, dict(sorted(self._store.checksums.items()))

    def __enter__(self) -> ZarrWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class ZarrReader:
    """Random access by utterance id within one part; ids and offsets are held in memory, and
    every chunk read is checked against the part's checksums."""

    def __init__(self, location: str | Path, part: PartContents, header: CacheHeader) -> None:
        try:
            group = open_verified_group(location, part.checksums)
            ids = [str(k) for k in group["utt_ids"][:]]
            self._offsets = group["frame_offsets"][:]
            self._arrays = {name: group[name] for name in header.fields()}
        except CacheFormatError:
            raise
        except (KeyError, FileNotFoundError, ValueError) as err:
            raise CacheFormatError(f"{location}: damaged zarr part ({err})") from err
        if ids != part.keys or self._offsets[-1] != part.num_frames:
            raise CacheFormatError(f"{location}: ids or offsets do not match its part.json")
        self._ids = ids
        self._index = {k: i for i, k in enumerate(ids)}

    def keys(self) -> list[str]:
        return list(self._ids)

    def _span(self, key: str) -> tuple[int, int]:
        try:
            i = self._index[key]
        except KeyError:
            raise KeyError(f"utterance {key!r} is not in the cache") from None
        return int(self._offsets[i]), int(self._offsets[i + 1])

    def blocks(self) -> list[list[str]]:
        """Runs of consecutive utterances spanning about one chunk of frames each."""
        step = next(iter(self._arrays.values())).chunks[0]
        out, i = [], 0
        while i < len(self._ids):
            j = int(np.searchsorted(self._offsets, self._offsets[i] + step, side="left"))
            j = min(max(j, i + 1), len(self._ids))
            out.append(self._ids[i:j])
            i = j
        return out

    def read_block(self, block: list[str]):
        """``(key, fields)`` for a block of :meth:`blocks`, reading its frames in one go."""
        lo, _ = self._span(block[0])
        _, hi = self._span(block[-1])
        values = {name: array[lo:hi] for name, array in self._arrays.items()}
        for key in block:
            a, b = self._span(key)
            yield key, {name: v[a - lo : b - lo] for name, v in values.items()}

    def read(self, key: str, frames: slice | None = None) -> dict[str, np.ndarray]:
        start, stop = self._span(key)
        if frames is not None:
            lo, hi, step = frames.indices(stop - start)
            if step != 1:
                raise ValueError("frame slices must be contiguous")
            start, stop = start + lo, start + max(hi, lo)
        return {name: array[start:stop] for name, array in self._arrays.items()}
