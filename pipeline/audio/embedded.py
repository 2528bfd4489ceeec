"""Audio embedded in table files, as the `datasets` library stores an Audio column: a struct of
the encoded file's ``bytes`` (FLAC, WAV, ...) and its original ``path``, in parquet shards
(``.parquet``, as datasets publishes them) or Arrow stream files (``.arrow``, as its
``save_to_disk`` writes them).

A row is read with its row group (parquet's smallest unit to read; an Arrow file's record
batch), column by column. The last row groups read stay decoded in a small per-process cache
bounded in bytes, so reading a stretch of rows in another order (stage one's length-sorted
batches) reads each row group once. Arrow files are memory-mapped, never read whole. pyarrow
is imported lazily (`pip install "hubert-kd[corpora]"`).
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pipeline.core.errors import AudioError, single_line

CACHE_BYTES = 256 * 2**20  # decoded row groups kept per process (the latest is always kept)
SUFFIXES = (".parquet", ".arrow")

_GROUPS: OrderedDict[tuple, list[bytes | None]] = OrderedDict()
_STARTS: dict[tuple, list[int]] = {}  # per file version: the first row of each row group
_ARROW: OrderedDict[tuple, Any] = OrderedDict()  # a few memory-mapped Arrow tables


def pyarrow() -> Any:
    """The ``pyarrow`` package (with its parquet module loaded), or an ImportError saying what
    to install."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "reading parquet or Arrow files needs pyarrow: pip install 'hubert-kd[corpora]'"
        ) from err
    return pa


def table_columns(path: Path, columns: list[str]) -> tuple[dict[str, list], int, list[str]]:
    """The values of those of ``columns`` the file has, its number of rows and all its column
    names (nothing else is read).

    Raises:
        AudioError: the file is missing or not a parquet or Arrow stream file.
    """
    version = _version(path)
    try:
        if path.suffix == ".arrow":
            table = _arrow(path, version)
            names = table.schema.names
            values = table.select([c for c in columns if c in names]).to_pydict()
            return values, table.num_rows, names
        pq = pyarrow().parquet
        shard = pq.ParquetFile(path)
        names = shard.schema_arrow.names
        wanted = [c for c in columns if c in names]
        return pq.read_table(path, columns=wanted).to_pydict(), shard.metadata.num_rows, names
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise AudioError(f"{path}: cannot read the table ({single_line(err)})") from err


def embedded_audio(path: Path, row: int, column: str) -> bytes:
    """The encoded audio file stored in row ``row`` (0-based, of the whole file) of the struct
    column ``column`` (its ``bytes`` field).

    Raises:
        AudioError: naming the file and row: no such file, row or column, or no bytes there.
    """
    where = f"{path}: row {row}"
    version = _version(path)
    starts = _row_group_starts(path, version)
    if not 0 <= row < starts[-1]:
        raise AudioError(f"{where}: no such row (the file has {starts[-1]})")
    group = bisect.bisect_right(starts, row) - 1
    data = _row_group(path, version, group, column)[row - starts[group]]
    if data is None:
        raise AudioError(f"{where}: no audio bytes in column {column!r} (null)")
    return data


def _version(path: Path) -> tuple:
    try:
        st = os.stat(path)
    except OSError as err:
        raise AudioError(f"{path}: file not found") from err
    return str(path), st.st_mtime_ns, st.st_size


def _arrow(path: Path, version: tuple) -> Any:
    """The Arrow stream file at ``path``, memory-mapped (zero-copy: nothing is read whole)."""
    if version not in _ARROW:
        pa = pyarrow()
        try:
            _ARROW[version] = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
        except (OSError, ValueError) as err:
            raise AudioError(f"{path}: cannot read the Arrow file ({single_line(err)})") from err
        while len(_ARROW) > 8:
            _ARROW.popitem(last=False)
    _ARROW.move_to_end(version)
    return _ARROW[version]


def _parquet(path: Path) -> Any:
    try:
        return pyarrow().parquet.ParquetFile(path)
    except (OSError, ValueError) as err:
        raise AudioError(f"{path}: cannot read the parquet shard ({single_line(err)})") from err


def _row_group_starts(path: Path, version: tuple) -> list[int]:
    if version not in _STARTS:
        if path.suffix == ".arrow":
            sizes = [len(chunk) for chunk in _arrow(path, version).column(0).chunks]
        else:
            meta = _parquet(path).metadata
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        starts = [0]
        for size in sizes:
            starts.append(starts[-1] + size)
        _STARTS[version] = starts
    return _STARTS[version]


def _row_group(path: Path, version: tuple, group: int, column: str) -> list[bytes | None]:
    key = (version, group, column)
    if key in _GROUPS:
        _GROUPS.move_to_end(key)
        return _GROUPS[key]
    table = _arrow(path, version) if path.suffix == ".arrow" else _parquet(path)
    names = table.schema.names if path.suffix == ".arrow" else table.schema_arrow.names
    if column not in names:
        raise AudioError(f"{path}: no column {column!r} (columns: {', '.join(names)})")
    try:
        if path.suffix == ".arrow":
            struct = table.column(column).chunk(group)
        else:
            struct = table.read_row_group(group, columns=[column]).column(column).combine_chunks()
    except (OSError, ValueError) as err:
        raise AudioError(f"{path}: cannot read column {column!r} ({single_line(err)})") from err
    is_struct = pyarrow().types.is_struct(struct.type)
    field = struct.type.get_field_index("bytes") if is_struct else -1
    if field < 0:
        raise AudioError(f"{path}: column {column!r} is not an audio struct of bytes and path")
    cells = struct.flatten()[field].to_pylist()  # a null struct gives null bytes
    _GROUPS[key] = cells
    while len(_GROUPS) > 1 and sum(_size(v) for v in _GROUPS.values()) > CACHE_BYTES:
        _GROUPS.popitem(last=False)
    return cells


def _size(cells: list[bytes | None]) -> int:
    return sum(len(c) for c in cells if c is not None)
