"""Corpora as the `datasets` library keeps them: parquet shards in the layout it publishes
(``data/<split>-0000N-of-0000M.parquet``) or a ``save_to_disk`` folder (Arrow files,
``<split>/data-0000N-of-0000M.arrow``), with an Audio column stored as a struct of the encoded
file's ``bytes`` and its ``path``. Read with pyarrow (datasets itself, which wants torchcodec to
decode audio, is not needed); the bytes are decoded with soundfile when a stage reads the row."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.audio.embedded import SUFFIXES, TableRow, table_columns
from pipeline.core.errors import AudioError, CorpusError
from pipeline.corpus.base import SOURCES, Entry, Source, split_of

_SHARD = re.compile(r"^(?P<split>.+?)-\d+-of-\d+$")


@dataclass(frozen=True)
class HFConfig:
    """Column names default to LibriSpeech as `datasets` publishes it.

    Attributes:
        path: a local folder of parquet shards or a ``save_to_disk`` folder, searched
            recursively (a dataset's own folder with ``data/``, or ``data/`` itself). No hub
            access: download it first.
        audio_column: the Audio column (a struct of ``bytes`` and ``path``).
        id_column: utterance ids (strings or integers); a file without it names its rows
            after its path below ``path`` (``train/data-00000-of-00001_<row>``: the hub's
            ``<config>/<split>/0000.parquet`` and save_to_disk's Arrow files share names).
        text_column: transcripts; a file without it gives none (distillation needs none).
        speaker_column: speaker ids; a file without it gives none.
    """

    path: str
    audio_column: str = "audio"
    id_column: str = "id"
    text_column: str = "text"
    speaker_column: str = "speaker_id"


@SOURCES.register
class HFSource(Source):
    """One utterance per row of each file. The split comes from a parquet shard's name, before
    ``-0000N-of-0000M`` (``train*``; ``validation``/``dev*``; ``test*``), or else (the hub's
    ``<config>/<split>/0000.parquet``, and Arrow files) from its folder's name; each row keeps
    it as its subset (``test.other``)."""

    name = "hf"
    config_type = HFConfig
    summary = "`datasets` parquet shards or a save_to_disk folder (Arrow files), offline"
    paths = ("path",)

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        top = self.found("path", "folder of parquet or Arrow files (no hub access)", folder=True)
        files = sorted(p for p in top.rglob("*") if p.suffix in SUFFIXES)
        if not files:
            raise CorpusError(f"{top}: no {' or '.join(SUFFIXES)} files in this folder or below")
        for path in files:
            yield from self._file(top, path)

    def _file(self, top: Path, path: Path) -> Iterator[Entry]:
        cfg = self.cfg
        try:
            table, rows, names = table_columns(
                path, [cfg.id_column, cfg.text_column, cfg.speaker_column]
            )
        except AudioError as err:
            raise CorpusError(str(err)) from err
        if cfg.audio_column not in names:
            raise CorpusError(f"{path}: no audio column {cfg.audio_column!r} (columns: "
                              f"{', '.join(names)}; prepare.source.audio_column)")  # fmt: skip
        match = _SHARD.match(path.stem)
        subset = match["split"] if match and path.suffix == ".parquet" else path.parent.name
        named = path.relative_to(top).with_suffix("").as_posix()
        ids = table.get(cfg.id_column, [f"{named}_{row}" for row in range(rows)])
        texts = table.get(cfg.text_column, [None] * rows)
        speakers = table.get(cfg.speaker_column, [None] * rows)
        for row in range(rows):
            audio = TableRow(path, row, cfg.audio_column)
            yield Entry(id=ids[row], audio=audio, transcript=texts[row], speaker=speakers[row],
                        split=split_of(subset), subset=subset, where=audio.where)  # fmt: skip
