"""WebDataset backend: each part is a few tar shards with one sample per utterance.

Layout of a part (``parts/<name>/`` of the cache)::

    cache-000000.tar, cache-000001.tar, ...   each holding, per utterance <id>:
        <id>.json            {"id": ..., "num_frames": n}
        <id>.targets.npy     (n,) int16 while C < 32768, else int32
        <id>.<field>.npy     the codec's fields, e.g. <id>.logits.npy (n, C)
    part.json

Members carry a fixed mtime, owner and mode, so re-running gives byte-identical shards. Arrays
are plain ``.npy`` (never pickled). Readable with ``webdataset.WebDataset(urls,
shardshuffle=False).map(decode_sample)`` (which never unpickles) and with ``tar``.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds

from pipeline.core.errors import CacheFormatError
from storage.base import BACKENDS, check_utterance
from storage.header import CacheHeader, PartContents
from storage.integrity import HashingWriter, check_bytes
from storage.location import filesystem

SHARD_PATTERN = "cache-{:06d}.tar"


@dataclass(frozen=True)
class WdsConfig:
    """Attributes: shard_utterances: utterances per tar shard."""

    shard_utterances: int

    def __post_init__(self) -> None:
        if self.shard_utterances < 1:
            raise ValueError("shard_utterances must be >= 1")


def decode_sample(sample: dict) -> dict:
    """Decode a cache sample read by plain ``webdataset.WebDataset``: ``.npy`` members with
    ``allow_pickle=False`` and ``.json`` as JSON; every other member stays raw bytes. Use it
    instead of ``.decode()``, whose default handlers unpickle ``.pyd``/``.pickle`` members (a
    tampered shard could run code)::

        webdataset.WebDataset(shards, shardshuffle=False).map(decode_sample)
    """
    out = {}
    for name, value in sample.items():
        if name.endswith(".npy"):
            value = np.load(io.BytesIO(value), allow_pickle=False)
        elif name == "json" or name.endswith(".json"):
            value = json.loads(value)
        out[name] = value
    return out


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@BACKENDS.register
class WdsBackend:
    name = "webdataset"
    config_type = WdsConfig

    def __init__(self, cfg: WdsConfig) -> None:
        self.cfg = cfg

    def writer(self, folder: Path, header: CacheHeader) -> WdsWriter:
        return WdsWriter(Path(folder), header, self.cfg)

    @staticmethod
    def reader(location: str | Path, part: PartContents, header: CacheHeader) -> WdsReader:
        return WdsReader(location, part, header)


class WdsWriter:
    """Writes tar shards of at most ``shard_utterances`` into the folder it is given, each
    under a temp name until it is full, hashing every byte as it goes out."""

    def __init__(self, folder: Path, header: CacheHeader, cfg: WdsConfig) -> None:
        self.cfg = cfg
        self.root = folder
        self._fields = header.fields()
        self._checksums: dict[str, str] = {}
        self._hashing: HashingWriter | None = None
        self._shard = -1
        self._in_shard = 0
        self._tar: wds.TarWriter | None = None
        self._file = None
        self._seen: set[str] = set()
        self._frames = 0

    def _next_shard(self) -> None:
        self._close_shard()
        self._shard += 1
        self._file = open(self.root / f".{SHARD_PATTERN.format(self._shard)}.tmp", "wb")
        self._hashing = HashingWriter(self._file)
        self._tar = wds.TarWriter(
            self._hashing, user="hubert-kd", group="hubert-kd", mtime=0.0, encoder=False
        )

    def _close_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._file.close()
            name = SHARD_PATTERN.format(self._shard)
            self._checksums[name] = self._hashing.hexdigest()
            (self.root / f".{name}.tmp").replace(self.root / name)
            self._tar, self._file, self._in_shard = None, None, 0

    def write(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        n = check_utterance(self._fields, self._seen, key, arrays)
        if self._tar is None or self._in_shard == self.cfg.shard_utterances:
            self._next_shard()
        sample = {"__key__": key, "json": json.dumps({"id": key, "num_frames": n}).encode()}
        for name, (_, dtype) in self._fields.items():
            sample[f"{name}.npy"] = _npy(arrays[name].astype(dtype, copy=False))
        self._tar.write(sample)
        self._in_shard += 1
        self._frames += n

    def close(self) -> tuple[int, dict[str, str]]:
        self._close_shard()
        return self._frames, dict(self._checksums)

    def __enter__(self) -> WdsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._tar is not None:
            self._tar.close()
            self._file.close()


class WdsReader:
    """Random access by utterance id within one part, through an index of tar member offsets
    built at open.

    Every shard is checked against the part's sha256 the first time data is read from it (the
    shard is read whole, once, and its members served from memory), so damage stops the read
    with the shard's name.
    """

    def __init__(self, location: str | Path, part: PartContents, header: CacheHeader) -> None:
        self.header = header
        self.path = location
        self._checksums = part.checksums
        self._fs, self._root = filesystem(location)
        self._index: dict[str, dict[str, tuple[str, int, int]]] = {}
        self._order: list[str] = []
        self._loaded: tuple[str, bytes] | None = None  # the last shard read, verified
        shards = sorted(n for n in part.checksums if n.startswith("cache-"))
        present = {p.rsplit("/", 1)[-1] for p in self._fs.glob(f"{self._root}/cache-*.tar")}
        for shard in shards:
            if shard not in present:
                raise CacheFormatError(
                    f"{location}/{shard}: missing (its part.json lists it); rerun cache-teacher"
                )
            try:
                with (
                    self._fs.open(f"{self._root}/{shard}", "rb") as f,
                    tarfile.open(fileobj=f) as tar,
                ):
                    for member in tar.getmembers():
                        key, _, ext = member.name.partition(".")
                        if key not in self._index:
                            self._index[key] = {}
                            self._order.append(key)
                        self._index[key][ext] = (shard, member.offset_data, member.size)
            except tarfile.TarError as err:
                raise CacheFormatError(f"{location}/{shard}: damaged tar shard ({err})") from err
        if self._order != part.keys:
            for shard in shards:
                self._shard(shard)  # names the damaged shard, if one is
            raise CacheFormatError(
                f"{location}: shards hold {len(self._order)} utterances, keys.json {len(part.keys)}"
            )

    def keys(self) -> list[str]:
        return list(self._order)

    def _shard(self, shard: str) -> bytes:
        if self._loaded is None or self._loaded[0] != shard:
            where = f"{self.path}/{shard}"
            try:
                data = self._fs.cat_file(f"{self._root}/{shard}")
            except FileNotFoundError:
                data = None
            self._loaded = (shard, check_bytes(where, data, self._checksums[shard]))
        return self._loaded[1]

    def _bytes(self, key: str, ext: str) -> bytes:
        try:
            shard, offset, size = self._index[key][ext]
        except KeyError:
            raise KeyError(f"utterance {key!r} is not in the cache (or lacks {ext})") from None
        return self._shard(shard)[offset : offset + size]

    def blocks(self) -> list[list[str]]:
        """The utterances of each tar shard."""
        out: dict[str, list[str]] = {}
        for key in self._order:
            out.setdefault(self._index[key]["json"][0], []).append(key)
        return list(out.values())

    def read_block(self, block: list[str]):
        for key in block:
            yield key, self.read(key)

    def read(self, key: str, frames: slice | None = None) -> dict[str, np.ndarray]:
        out = {}
        for name in self.header.fields():
            array = np.load(io.BytesIO(self._bytes(key, f"{name}.npy")), allow_pickle=False)
            out[name] = array if frames is None else array[frames]
        return out
