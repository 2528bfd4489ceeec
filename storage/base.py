"""The teacher cache contract: header, Writer/Reader protocol, backend registry.

A cache is a folder. ``header.json`` is written last and marks the cache complete; a folder
without it (or with an unknown schema version) is never read as a cache.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.errors import CacheFormatError
from pipeline.registry import Registry

SCHEMA_VERSION = 1
HEADER = "header.json"

BACKENDS: Registry = Registry("cache backend")


@dataclass(frozen=True)
class CacheHeader:
    """What a cache holds and where it came from.

    Attributes:
        schema_version: layout version of the cache (readers refuse others).
        backend: registered backend name that wrote it.
        teacher: human-readable teacher provenance.
        fingerprint: sha256 of the teacher's weights and head.
        corpus: sha256 of the manifest the teacher ran over.
        num_classes: C.
        frame_rate: frames per second of the logits (50.0 for HuBERT).
        frame_kernels: conv kernels of the teacher's frame stack (students must match).
        frame_strides: conv strides of the teacher's frame stack.
        codec: how logits are stored, e.g. ``{"name": "full", "dtype": "float16"}``.
        target_source: how per-frame targets were made (``argmax`` of the teacher's logits).
        num_utterances: utterances in the cache.
        num_frames: frames in the cache.
    """

    schema_version: int
    backend: str
    teacher: str
    fingerprint: str
    corpus: str
    num_classes: int
    frame_rate: float
    frame_kernels: list[int]
    frame_strides: list[int]
    codec: dict[str, Any]
    target_source: str
    num_utterances: int
    num_frames: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_header(path: Path) -> CacheHeader:
    """Read and check ``path/header.json``.

    Raises:
        CacheFormatError: missing header (incomplete cache), bad JSON or unknown schema.
    """
    file = Path(path) / HEADER
    if not file.is_file():
        raise CacheFormatError(
            f"{path}: no {HEADER}; not a cache, or an incomplete one (rerun cache-teacher)"
        )
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CacheFormatError(f"{file}: damaged header ({err})") from err
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CacheFormatError(
            f"{file}: cache schema version {version!r}, this hubert-kd reads {SCHEMA_VERSION}"
        )
    try:
        return CacheHeader(**raw)
    except TypeError as err:
        raise CacheFormatError(f"{file}: header fields do not match schema ({err})") from err


class Writer(Protocol):
    """Writes one cache; nothing is readable before :meth:`close` commits it."""

    name: str

    def write(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Add utterance ``key`` with ``logits (n, C)`` and ``targets (n,)``."""

    def close(self) -> CacheHeader:
        """Finish and commit the cache; returns the final header."""

    def __enter__(self) -> Writer: ...

    def __exit__(self, *exc: object) -> None: ...


class Reader(Protocol):
    """Random access to a committed cache."""

    header: CacheHeader

    def keys(self) -> list[str]:
        """Utterance ids in storage order."""

    def num_frames(self, key: str) -> int:
        """Frames stored for ``key``."""

    def read(self, key: str, frames: slice | None = None) -> dict[str, np.ndarray]:
        """``{"logits": (n, C), "targets": (n,)}`` for ``key`` (optionally a frame slice)."""


def open_cache(path: str | Path) -> Reader:
    """Open a committed cache with the backend its header names."""
    path = Path(path)
    header = read_header(path)
    return BACKENDS[header.backend].reader(path, header)
