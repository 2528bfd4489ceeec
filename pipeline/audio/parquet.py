"""Audio embedded in parquet shards, as the `datasets` library stores an Audio column: a struct
of the encoded file's ``bytes`` (FLAC, WAV, ...) and its original ``path``.

A row is read by reading its row group (parquet's smallest unit), column by column; the last
row groups read stay decoded in a small per-process cache bounded in bytes, so reading the rows
of a manifest stretch in another order (length-sorted batches) reads each row group once.
pyarrow is imported lazily (`pip install "hubert-kd[corpora]"`).
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pipeline.core.errors import AudioError

CACHE_BYTES = 256 * 2**20  # decoded row groups kept per process (the latest is always kept)

_GROUPS: OrderedDict[tuple, list[bytes | None]] = OrderedDict()
_STARTS: dict[tuple, list[int]] = {}  # per shard version: the first row of each row group


def pyarrow_parquet() -> Any:
    """``pyarrow.parquet``, or an ImportError saying what to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            "reading parquet shards needs pyarrow: pip install 'hubert-kd[corpora]' (or pyarrow)"
        ) from err
    return pq


def embedded_audio(path: Path, row: int, column: str) -> bytes:
    """The encoded audio file stored in row ``row`` (0-based, of the whole shard) of the struct
    column ``column`` (its ``bytes`` field).

    Raises:
        AudioError: naming the shard and row: no such shard, row or column, or no bytes there.
    """
    where = f"{path}: row {row}"
    try:
        version = (str(path), *_stamp(path))
    except OSError as err:
        raise AudioError(f"{path}: parquet shard not found") from err
    starts = _row_group_starts(path, version)
    if not 0 <= row < starts[-1]:
        raise AudioError(f"{where}: no such row (the shard has {starts[-1]})")
    group = bisect.bisect_right(starts, row) - 1
    cells = _row_group(path, version, group, column)
    data = cells[row - starts[group]]
    if data is None:
        raise AudioError(f"{where}: no audio bytes in column {column!r} (null)")
    return data


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def _row_group_starts(path: Path, version: tuple) -> list[int]:
    if version not in _STARTS:
        meta = _open(path).metadata
        starts = [0]
        for i in range(meta.num_row_groups):
            starts.append(starts[-1] + meta.row_group(i).num_rows)
        _STARTS[version] = starts
    return _STARTS[version]


def _open(path: Path) -> Any:
    pq = pyarrow_parquet()
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise AudioError(f"{path}: cannot read the parquet shard ({err})") from err


def _row_group(path: Path, version: tuple, group: int, column: str) -> list[bytes | None]:
    key = (version, group, column)
    if key in _GROUPS:
        _GROUPS.move_to_end(key)
        return _GROUPS[key]
    shard = _open(path)
    names = shard.schema_arrow.names
    if column not in names:
        raise AudioError(f"{path}: no column {column!r} (columns: {', '.join(names)})")
    try:
        struct = shard.read_row_group(group, columns=[column]).column(column).combine_chunks()
        field = struct.type.get_field_index("bytes")  # AttributeError: not a struct
    except (OSError, ValueError, AttributeError) as err:
        raise AudioError(f"{path}: cannot read column {column!r} ({err})") from err
    if field < 0:
        raise AudioError(f"{path}: column {column!r} is not an audio struct of bytes and path")
    cells = struct.flatten()[field].to_pylist()  # a null struct gives null bytes
    _GROUPS[key] = cells
    while len(_GROUPS) > 1 and sum(_size(v) for v in _GROUPS.values()) > CACHE_BYTES:
        _GROUPS.popitem(last=False)
    return cells


def _size(cells: list[bytes | None]) -> int:
    return sum(len(c) for c in cells if c is not None)
