"""Audio embedded in table files, as the `datasets` library stores an Audio column: a struct of
the encoded file's ``bytes`` (FLAC, WAV, ...) and its original ``path``, in parquet shards (as
datasets publishes them) or Arrow stream files (as its ``save_to_disk`` writes them); and the
address of such a file's row (:class:`TableRow`).

The two formats are two small readers behind one interface (:class:`Table`): column names,
row groups (parquet's smallest unit to read; an Arrow file's record batches), the values of a
few columns, one row group's column. A row is read with its row group, column by column. The
last row groups read stay decoded in a small per-process cache bounded in bytes, so reading a
stretch of rows in another order (stage one's length-sorted batches) reads each row group
once. Arrow files are memory-mapped, never read whole. pyarrow is imported lazily
(`pip install "hubert-kd[corpora]"`).
"""

from __future__ import annotations

import bisect
import io
import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from pipeline.audio.address import ADDRESSES, Address, Located
from pipeline.audio.files import open_audio, read_frames, read_range
from pipeline.core.errors import AudioError, single_line
from pipeline.core.hashing import sha256_bytes

CACHE_BYTES = 256 * 2**20  # decoded row groups kept per process (the latest is always kept)
OPEN_TABLES = 8  # tables kept open per process (an Arrow file: its memory map)

_GROUPS: OrderedDict[tuple, list[bytes | None]] = OrderedDict()
_TABLES: OrderedDict[tuple, Table] = OrderedDict()


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


class Table(ABC):
    """A table file, open for reading.

    Attributes:
        what: how messages name a file of this format.
        path: the file.
        version: its path, modification time and size: what its decoded rows are kept by.
        names: its column names.
        sizes: the number of rows of each row group, in order.
    """

    what: ClassVar[str]
    names: list[str]
    sizes: list[int]

    def __init__(self, path: Path, version: tuple) -> None:
        self.path, self.version = path, version

    @abstractmethod
    def columns(self, names: list[str]) -> dict[str, list]:
        """The values of columns ``names`` (all of them the file's), as Python lists."""

    @abstractmethod
    def group(self, index: int, column: str) -> Any:
        """Row group ``index`` of ``column``, as one pyarrow array."""


class ParquetTable(Table):
    """A parquet shard: its footer read on opening, a row group read from the file when asked
    (no file stays open)."""

    what = "parquet shard"

    def __init__(self, path: Path, version: tuple) -> None:
        super().__init__(path, version)
        meta = pyarrow().parquet.ParquetFile(path)
        self.names = meta.schema_arrow.names
        self.sizes = [meta.metadata.row_group(i).num_rows for i in range(meta.num_row_groups)]

    def columns(self, names: list[str]) -> dict[str, list]:
        return pyarrow().parquet.read_table(self.path, columns=names).to_pydict()

    def group(self, index: int, column: str) -> Any:
        shard = pyarrow().parquet.ParquetFile(self.path)
        return shard.read_row_group(index, columns=[column]).column(column).combine_chunks()


class ArrowTable(Table):
    """An Arrow stream file, memory-mapped (zero-copy: nothing is read whole); its record
    batches are its row groups."""

    what = "Arrow file"

    def __init__(self, path: Path, version: tuple) -> None:
        super().__init__(path, version)
        pa = pyarrow()
        self.table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
        self.names = self.table.schema.names
        self.sizes = [len(chunk) for chunk in self.table.column(0).chunks]

    def columns(self, names: list[str]) -> dict[str, list]:
        return self.table.select(names).to_pydict()

    def group(self, index: int, column: str) -> Any:
        return self.table.column(column).chunk(index)


READERS: dict[str, type[Table]] = {".parquet": ParquetTable, ".arrow": ArrowTable}
SUFFIXES = tuple(READERS)  # the table files a folder of them holds


def open_table(path: Path) -> Table:
    """The table file ``path`` (by its suffix, one of :data:`SUFFIXES`), kept open for the
    next call while the file stays as it is.

    Raises:
        AudioError: the file is missing, of another format, or not a table of its format.
    """
    try:
        st = os.stat(path)
    except OSError as err:
        raise AudioError(f"{path}: file not found") from err
    version = (str(path), st.st_mtime_ns, st.st_size)
    if version not in _TABLES:
        if path.suffix not in READERS:
            raise AudioError(f"{path}: not a table file ({', '.join(SUFFIXES)})")
        reader = READERS[path.suffix]
        try:
            _TABLES[version] = reader(path, version)
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise AudioError(f"{path}: cannot read the {reader.what} ({single_line(err)})") from err
        while len(_TABLES) > OPEN_TABLES:
            _TABLES.popitem(last=False)
    _TABLES.move_to_end(version)
    return _TABLES[version]


def table_columns(path: Path, columns: list[str]) -> tuple[dict[str, list], int, list[str]]:
    """The values of those of ``columns`` the file has, its number of rows and all its column
    names (nothing else is read).

    Raises:
        AudioError: the file is missing or not a parquet or Arrow stream file.
    """
    table = open_table(path)
    try:
        values = table.columns([c for c in columns if c in table.names])
    except (OSError, ValueError) as err:
        raise AudioError(f"{path}: cannot read the {table.what} ({single_line(err)})") from err
    return values, sum(table.sizes), table.names


def embedded_audio(path: Path, row: int, column: str) -> bytes:
    """The encoded audio file stored in row ``row`` (0-based, of the whole file) of the struct
    column ``column`` (its ``bytes`` field).

    Raises:
        AudioError: naming the file and row: no such file, row or column, or no bytes there.
    """
    table = open_table(path)
    starts = [0, *_cumulative(table.sizes)]
    if not 0 <= row < starts[-1]:
        raise AudioError(f"{path}: row {row}: no such row (the file has {starts[-1]})")
    group = bisect.bisect_right(starts, row) - 1
    data = _cells(table, group, column)[row - starts[group]]
    if data is None:
        raise AudioError(f"{path}: row {row}: no audio bytes in column {column!r} (null)")
    return data


def _cumulative(sizes: list[int]) -> list[int]:
    out, total = [], 0
    for size in sizes:
        total += size
        out.append(total)
    return out


def _cells(table: Table, group: int, column: str) -> list[bytes | None]:
    """The ``bytes`` of each row of a row group's audio column, from the cache if there."""
    key = (table.version, group, column)
    if key in _GROUPS:
        _GROUPS.move_to_end(key)
        return _GROUPS[key]
    path = table.path
    if column not in table.names:
        raise AudioError(f"{path}: no column {column!r} (columns: {', '.join(table.names)})")
    try:
        struct = table.group(group, column)
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


@ADDRESSES.register
@dataclass(frozen=True)
class TableRow(Address):
    """The encoded audio file in row ``row`` (0-based, of the whole file) of the struct column
    ``column`` of a parquet shard or Arrow file (the `datasets` layouts), identified by those
    bytes' sha256."""

    name = "row"
    keys = ("row", "column")
    path: Path
    row: int
    column: str = ""

    @property
    def where(self) -> str:
        return f"{self.path}: row {self.row}"

    def locate(self) -> Located:
        data = embedded_audio(self.path, self.row, self.column)
        with open_audio(io.BytesIO(data), self.where) as f:
            samples, rate = read_frames(f, self.where).shape[0], f.samplerate
        return Located(self, samples, rate, sha256_bytes(data))

    def read(self, samples: int) -> torch.Tensor:
        data = io.BytesIO(embedded_audio(self.path, self.row, self.column))
        return read_range(data, self.where, 0, samples)
