"""A user's own list of audio files: JSONL, a TSV with a header, or fairseq's TSV."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.audio.files import AudioFile
from pipeline.core.errors import CorpusError
from pipeline.corpus.base import SOURCES, Entry, Source
from pipeline.corpus.lines import json_lines, numbered_lines
from pipeline.corpus.manifest import SPLITS


@dataclass(frozen=True)
class ListingConfig:
    """Attributes:
    path: a ``.jsonl`` file (one object per line with ``audio`` and optional ``id``,
        ``transcript``, ``speaker``, ``split``), a ``.tsv`` with a header row naming the same
        columns, or a fairseq/wav2vec ``.tsv`` (first line: root folder; then
        ``relative/path<TAB>num_samples``). Relative audio paths are relative to the list's folder
        (to the root line for fairseq lists).
    """

    path: str


@SOURCES.register
class ListingSource(Source):
    """Utterances from a user's JSONL or TSV list."""

    name = "manifest"
    config_type = ListingConfig
    summary = "a list of audio files: JSONL, a TSV with a header, or fairseq's TSV"
    paths = ("path",)

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        path = self.found("path", "audio list")
        rows = _jsonl(path) if path.suffix == ".jsonl" else _tsv(path)
        empty = True
        for where, base, row in rows:
            empty = False
            yield _entry(where, base, row)
        if empty:
            raise CorpusError(f"{path}: lists no audio")


def _jsonl(path: Path) -> Iterator[tuple[str, Path, dict]]:
    for where, row in json_lines(path, what="audio list"):
        if not isinstance(row, dict):
            raise CorpusError(f"{where}: expected a JSON object with 'audio', got {row!r}")
        yield where, path.parent, row


def _tsv(path: Path) -> Iterator[tuple[str, Path, dict]]:
    lines = numbered_lines(path, what="audio list")
    first = next(lines, None)
    if first is None:
        raise CorpusError(f"{path}: empty list")
    header = _fields(first[1])
    if len(header) == 1 and "audio" not in header:  # fairseq: root dir, then path<TAB>n
        base = Path(header[0]).expanduser()
        for where, line in lines:
            fields = line.split("\t")
            if len(fields) != 2 or not fields[1].strip().isdigit():
                raise CorpusError(f"{where}: expected a fairseq line '<path><TAB><samples>', "
                                  f"got {line!r}")  # fmt: skip
            yield where, base, {"audio": fields[0]}
        return
    for where, line in lines:
        values = _fields(line)
        if len(values) != len(header):
            raise CorpusError(f"{where}: {len(values)} columns where the header names "
                              f"{len(header)} ({', '.join(header)})")  # fmt: skip
        yield where, path.parent, dict(zip(header, values, strict=True))


def _fields(line: str) -> list[str]:
    """A TSV line's fields (csv's quoting rules, as a spreadsheet writes them)."""
    return next(csv.reader([line], delimiter="\t"))


def _entry(where: str, base: Path, row: dict) -> Entry:
    """One list row as an :class:`Entry` (its id, transcript and speaker as written: prepare
    checks them), or a :class:`CorpusError` naming the row. A row without an id (absent, null
    or "") is named after its audio file."""
    audio = row.get("audio")
    if not isinstance(audio, str) or not audio:
        raise CorpusError(f"{where}: 'audio' must be a path (a non-empty string), got {audio!r}")
    split = row.get("split") or None
    if split is not None and split not in SPLITS:
        raise CorpusError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    path = Path(audio).expanduser()
    return Entry(
        id=row.get("id") if row.get("id") not in (None, "") else Path(audio).stem,
        audio=AudioFile(path if path.is_absolute() else base / path),
        transcript=row.get("transcript"),
        speaker=row.get("speaker"),
        split=split,
        where=where,
    )
