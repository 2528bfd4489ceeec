"""A user's own list of audio files: JSONL, a TSV with a header, or fairseq's TSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.corpus.source import SOURCES, Entry, safe_id
from pipeline.errors import CorpusError
from pipeline.manifest import SPLITS


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

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        if not self.path.is_file():
            raise CorpusError(f"{self.path}: audio list not found (prepare.manifest.path)")
        rows = self._jsonl() if self.path.suffix == ".jsonl" else self._tsv()
        for where, base, row in rows:
            if "audio" not in row or not row["audio"]:
                raise CorpusError(f"{where}: row has no 'audio' path")
            audio = Path(row["audio"]).expanduser()
            audio = audio if audio.is_absolute() else base / audio
            split = row.get("split") or None
            if split is not None and split not in SPLITS:
                raise CorpusError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
            yield Entry(
                id=safe_id(str(row.get("id") or Path(row["audio"]).stem)),
                audio=audio,
                transcript=str(row.get("transcript", "")),
                speaker=str(row.get("speaker", "")),
                split=split,
            )

    def _jsonl(self) -> Iterator[tuple[str, Path, dict]]:
        for lineno, line in enumerate(self.path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    yield f"{self.path}:{lineno}", self.path.parent, json.loads(line)
                except json.JSONDecodeError as err:
                    raise CorpusError(f"{self.path}:{lineno}: not JSON ({err})") from err

    def _tsv(self) -> Iterator[tuple[str, Path, dict]]:
        lines = self.path.read_text().splitlines()
        if not lines:
            raise CorpusError(f"{self.path}: empty list")
        first = lines[0].split("\t")
        if len(first) == 1 and "audio" not in first:  # fairseq: root dir, then path<TAB>n
            base = Path(first[0]).expanduser()
            for lineno, line in enumerate(lines[1:], start=2):
                if line.strip():
                    yield f"{self.path}:{lineno}", base, {"audio": line.split("\t")[0]}
            return
        reader = csv.DictReader(lines, delimiter="\t")
        for lineno, row in enumerate(reader, start=2):
            yield f"{self.path}:{lineno}", self.path.parent, row
