"""Reading a committed cache: its parts as one keyed store, checked on every read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import CacheFormatError
from pipeline.core.hashing import sha256_stream
from pipeline.core.io import MARKER
from storage.base import BACKENDS, PartReader
from storage.header import (
    CHECKSUMS,
    FITTED,
    FRONTEND,
    HEADER,
    KEYS,
    PART,
    PARTS,
    PartContents,
    part_location,
    read_header,
    read_part,
)
from storage.integrity import check_bytes
from storage.location import files, filesystem, location, read_bytes


class CacheReader:
    """Random and streaming access to every utterance of a committed cache.

    Each part's ``part.json`` is read (and checked against the header) at open; a part's data is
    opened only when first read, and every byte read is checked against the checksums taken when
    it was written.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = location(path)
        self.header = read_header(self.path)
        self._parts: dict[str, PartContents] = {}
        self._where: dict[str, str] = {}
        for info in self.header.parts:
            part = read_part(self.path, info)
            self._parts[info.name] = part
            self._where.update(dict.fromkeys(part.keys, info.name))
        self._readers: dict[str, PartReader] = {}

    def _reader(self, name: str) -> PartReader:
        if name not in self._readers:
            backend = BACKENDS[self.header.backend]
            where = part_location(self.path, name)
            self._readers[name] = backend.reader(where, self._parts[name], self.header)
        return self._readers[name]

    def _part_of(self, key: str) -> str:
        try:
            return self._where[key]
        except KeyError:
            raise KeyError(f"utterance {key!r} is not in the cache") from None

    def keys(self) -> list[str]:
        """Utterance ids in storage order (part by part)."""
        return [k for part in self._parts.values() for k in part.keys]

    @property
    def codec(self):
        """The cache's logit codec, with its fitted constants (read and checked once)."""
        if "_codec" not in self.__dict__:
            self._codec = read_codec(self.path, self.header)
        return self._codec

    def read(self, key: str, frames: slice | None = None) -> dict[str, np.ndarray]:
        """The stored fields of ``key`` (logits decoded by :attr:`codec`)."""
        return self._reader(self._part_of(key)).read(key, frames)

    def blocks(self, part: str | None = None) -> list[list[str]]:
        """Utterance ids grouped in storage units cheap to read together (chunk runs, tar
        shards), part by part (or of one ``part``): the unit of streaming and of splitting
        work across readers."""
        out = []
        for name, header in self._parts.items():
            if header.keys and part in (None, name):
                out.extend(self._reader(name).blocks())
        return out

    def read_block(self, block: list[str]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """``(key, fields)`` for every utterance of one of :meth:`blocks`."""
        return self._reader(self._part_of(block[0])).read_block(block)


def open_cache(path: str | Path) -> CacheReader:
    """Open a committed cache (a folder or an fsspec URL)."""
    return CacheReader(path)


def verify_cache(path: str | Path) -> list[str]:
    """Problems found in a committed cache (empty when sound): an edited header or part, files
    missing, added or damaged, each named by its path. ``path`` may be an fsspec URL.

    Raises:
        CacheFormatError: no readable header (then nothing else can be checked).
    """
    header = read_header(path)
    expected = dict(header.checksums)
    problems = []
    for info in header.parts:
        try:
            part = read_part(path, info)
        except CacheFormatError as err:
            problems.append(str(err))
            continue
        for checked in (PART, KEYS, CHECKSUMS):  # checked by read_part above
            expected[f"{PARTS}/{info.name}/{checked}"] = None
        for name, digest in part.checksums.items():
            expected[f"{PARTS}/{info.name}/{name}"] = digest
    found = set(files(path)) - {HEADER, MARKER}
    problems += [f"{name}: missing" for name in sorted(set(expected) - found)]
    problems += [f"{name}: not listed in the header" for name in sorted(found - set(expected))]
    fs, root = filesystem(path)
    for name, digest in sorted(expected.items()):
        if digest is None or name not in found:
            continue
        with fs.open(f"{root}/{name}", "rb") as f:
            if sha256_stream(f) != digest:
                problems.append(f"{name}: checksum mismatch (damaged or changed)")
    return problems


def cache_summary(path: str | Path) -> dict[str, Any]:
    """What a committed cache holds, for ``pipeline cache-info``."""
    from storage.codecs import field_bytes
    from storage.features import feature_fields

    header = read_header(path)
    on_disk = sum(size for name, size in files(path).items() if name not in (HEADER, MARKER))
    fp32 = header.num_frames * header.num_classes * 4
    features = {
        name: f"{spec['dim']} x {spec['encoding']} = "
        f"{field_bytes(feature_fields(name, spec['dim'], spec['encoding']))} bytes/frame"
        for name, spec in header.features.items()
    }
    return {
        "path": str(path),
        "backend": header.backend,
        "utterances": header.num_utterances,
        "frames": header.num_frames,
        "hours": round(header.num_frames / header.frame_rate / 3600, 4),
        "classes": header.num_classes,
        "codec": header.codec,
        "bytes/frame (encoded)": header.bytes_per_frame(),
        "bytes/frame (on disk)": round(on_disk / max(header.num_frames, 1), 1),
        "fp32 logits / on disk": round(fp32 / max(on_disk, 1), 2),
        "features": features or "none",
        "teacher": header.teacher,
        "fingerprint": header.fingerprint,
        "targets": header.target_source,
        "frame rate": header.frame_rate,
        "parts": len(header.parts),
        "schema": header.schema_version,
    }


def _checked(path: str | Path, name: str, expected: str) -> bytes:
    try:
        data = read_bytes(path, name)
    except FileNotFoundError:
        data = None
    return check_bytes(f"{path}/{name}", data, expected)


def read_codec(path: str | Path, header=None):
    """The logit codec of the cache at ``path``, a learned one with the constants fitted for it
    (``fitted.safetensors``, checked against the header).

    Raises:
        CacheFormatError: the constants are missing or damaged.
    """
    from safetensors.torch import load

    from storage.codecs import codec_from_header

    header = header or read_header(path)
    if "constants" not in header.codec:
        return codec_from_header(header.codec)
    tensors = load(_checked(path, FITTED, header.checksums.get(FITTED, "")))
    prefix = f"codec/{header.codec['name']}/"
    constants = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    return codec_from_header(header.codec, constants)


def read_frontend(path: str | Path) -> tuple[dict[str, Any], dict] | None:
    """The teacher's conv stack carried by a cache: ``(spec, state_dict)``, or None.

    Raises:
        CacheFormatError: the header lists it but the file is missing or damaged.
    """
    from safetensors.torch import load

    header = read_header(path)
    if header.frontend is None:
        return None
    return header.frontend, load(_checked(path, FRONTEND, header.checksums.get(FRONTEND, "")))
