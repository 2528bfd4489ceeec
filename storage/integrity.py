"""Checksums of cache files: taken from the bytes a writer writes, checked on every read.

Writers hash what they write (never what happens to be on disk at close), so a file damaged or
replaced later, or written by a second run, never gets a valid checksum. Readers check each
file's sha256 as they read it (a zarr chunk, a tar shard) and raise :class:`CacheFormatError`
naming the file, so training never runs on damaged data.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from pipeline.core.errors import CacheFormatError
from pipeline.core.hashing import sha256_bytes

DAMAGED = "rerun cache-teacher to rebuild it (pipeline cache-verify lists every damaged file)"


def check_bytes(where: str, data: bytes | None, expected: str) -> bytes:
    """``data`` read from file ``where`` if it matches ``expected``.

    Raises:
        CacheFormatError: the file is missing (``data`` is None) or its checksum differs.
    """
    if data is None:
        raise CacheFormatError(f"{where}: missing (the cache header lists it); {DAMAGED}")
    if sha256_bytes(data) != expected:
        raise CacheFormatError(
            f"{where}: checksum mismatch (damaged, truncated or changed); {DAMAGED}"
        )
    return data


class HashingWriter:
    """A write-only file wrapper that hashes every byte written through it."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
