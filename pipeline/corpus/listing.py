"""A user's own list of audio files: JSONL, a TSV with a header, or fairseq's TSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import CorpusError
from pipeline.corpus.base import SOURCES, Entry
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
class ListingSource:
    """Utterances from a user's JSONL or TSV list."""

    name = "manifest"
    config_type = ListingConfig

    def __init__(self, cfg: ListingConfig) -> None:
        self.path = Path(cfg.path).expanduser()

    def inputs(self) -> list[tuple[str, Path]]:
        return [("prepare.source.path", self.path)]

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        if not self.path.is_file():
            raise CorpusError(f"{self.path}: audio list not found (prepare.source.path)")
        rows = self._jsonl() if self.path.suffix == ".jsonl" else self._tsv()
        empty = True
        for where, base, row in rows:
            empty = False
            yield _entry(where, base, row)
        if empty:
            raise CorpusError(f"{self.path}: lists no audio")

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            where = f"{self.path}: not UTF-8 text"
            raise CorpusError(f"{where} ({err.reason} at byte {err.start})") from err

    def _jsonl(self) -> Iterator[tuple[str, Path, dict]]:
        for lineno, line in enumerate(self._lines(), start=1):
            if line.strip():
                where = f"{self.path}:{lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CorpusError(f"{where}: not JSON ({err})") from err
                if not isinstance(row, dict):
                    raise CorpusError(f"{where}: expected a JSON object with 'audio', got {line!r}")
                yield where, self.path.parent, row

    def _tsv(self) -> Iterator[tuple[str, Path, dict]]:
        lines = self._lines()
        if not lines:
            raise CorpusError(f"{self.path}: empty list")
        first = lines[0].split("\t")
        if len(first) == 1 and "audio" not in first:  # fairseq: root dir, then path<TAB>n
            base = Path(first[0]).expanduser()
            for lineno, line in enumerate(lines[1:], start=2):
                if line.strip():
                    fields = line.split("\t")
                    if len(fields) != 2 or not fields[1].strip().isdigit():
                        raise CorpusError(f"{self.path}:{lineno}: expected a fairseq line "
                                          f"'<path><TAB><samples>', got {line!r}")  # fmt: skip
                    yield f"{self.path}:{lineno}", base, {"audio": fields[0]}
            return
        reader = csv.DictReader(lines, delimiter="\t")
        for lineno, row in enumerate(reader, start=2):
            where = f"{self.path}:{lineno}"
            if None in row or None in row.values():
                raise CorpusError(
                    f"{where}: {len(lines[lineno - 1].split(chr(9)))} columns where the header "
                    f"names {len(reader.fieldnames)} ({', '.join(reader.fieldnames)})"
                )
            yield where, self.path.parent, row


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
        audio=path if path.is_absolute() else base / path,
        transcript=row.get("transcript"),
        speaker=row.get("speaker"),
        split=split,
        where=where,
    )
