"""The backend contract: a part writer and a part reader per registered backend.

A backend stores the utterances of one part in a local folder it is given (``writer``) and
reads a committed part back from a folder or URL (``reader``). Committing, uploading, locking
and the cache header are :mod:`storage.cache`'s job, the same for every backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.core.registry import Registry
from storage.header import CacheHeader, PartContents

BACKENDS: Registry = Registry("cache backend")


class PartWriter(Protocol):
    """Writes the utterances of one part into a folder; a context manager, ended by
    :meth:`close` (an exception inside the ``with`` leaves nothing for the caller to commit)."""

    def write(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Add utterance ``key`` with every field of ``header.fields()``, each ``(n, ...)``."""

    def close(self) -> tuple[int, dict[str, str]]:
        """Finish; returns the frames written and the sha256 of every file, as written."""

    def __enter__(self) -> PartWriter: ...

    def __exit__(self, *exc: object) -> None: ...


class PartReader(Protocol):
    """Reads one committed part, checking every file against the part's checksums."""

    def keys(self) -> list[str]:
        """Utterance ids in storage order."""

    def read(self, key: str, frames: slice | None = None) -> dict[str, np.ndarray]:
        """The stored fields of ``key`` (optionally a frame slice); decode them with
        ``header.decode``."""

    def blocks(self) -> list[list[str]]:
        """Utterance ids grouped in storage units that are cheap to read together (a chunk
        run, a tar shard): the unit of streaming and of splitting work across readers."""

    def read_block(self, block: list[str]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """``(key, fields)`` for every utterance of one of :meth:`blocks`."""


class Backend(Protocol):
    name: str
    config_type: type

    def writer(self, folder: Path, header: CacheHeader) -> PartWriter: ...

    @staticmethod
    def reader(location: str | Path, part: PartContents, header: CacheHeader) -> PartReader: ...


def check_utterance(
    fields: dict[str, tuple[tuple[int, ...], str]], seen: set[str], key: str, arrays: dict
) -> int:
    """Validate one utterance handed to a writer (all fields, consistent frames, a new key
    without dots) and record its key; returns its frame count."""
    first = arrays.get(next(iter(fields)))
    n = len(first) if first is not None else 0
    expected = {name: (n, *shape) for name, (shape, _) in fields.items()}
    got = {name: getattr(arrays.get(name), "shape", None) for name in fields}
    if got != expected or n == 0 or set(arrays) != set(fields):
        raise ValueError(f"{key}: expected fields {expected} with n > 0, got {got}")
    if "." in key or key in seen:
        raise ValueError(f"{key}: written twice, or holds a dot (not a valid utterance id)")
    seen.add(key)
    return n
