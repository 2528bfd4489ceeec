"""Parquet shards in the layout the `datasets` library publishes: ``data/<split>-0000N-of-0000M
.parquet``, with an Audio column stored as a struct of the encoded file's ``bytes`` and its
``path``. Read with pyarrow (datasets itself, which wants torchcodec to decode audio, is not
needed); the audio bytes are decoded with soundfile when a stage reads the row."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.audio.parquet import pyarrow_parquet
from pipeline.core.errors import CorpusError
from pipeline.corpus.base import SOURCES, Entry, safe_id, split_of

_SHARD = re.compile(r"^(?P<split>.+?)-\d+-of-\d+$")


@dataclass(frozen=True)
class HFConfig:
    """Column names default to LibriSpeech as `datasets` publishes it.

    Attributes:
        path: a local folder of parquet shards (searched recursively: a dataset's own folder
            with ``data/``, or ``data/`` itself). No hub access: download it first.
        audio_column: the Audio column (a struct of ``bytes`` and ``path``).
        id_column: utterance ids; a shard without it names rows ``<shard>_<row>``.
        text_column: transcripts; a shard without it gives none (distillation needs none).
        speaker_column: speaker ids; a shard without it gives none.
    """

    path: str
    audio_column: str = "audio"
    id_column: str = "id"
    text_column: str = "text"
    speaker_column: str = "speaker_id"


@SOURCES.register
class HFSource:
    """One utterance per row of each shard. The split comes from the shard's name, before
    ``-0000N-of-0000M`` (``train*``; ``validation``/``dev*``; ``test*``), or else from its
    folder's name (the hub's ``<config>/<split>/0000.parquet``), which each row also keeps as
    its subset (``test.other``)."""

    name = "hf"
    config_type = HFConfig

    def __init__(self, cfg: HFConfig) -> None:
        self.cfg = cfg
        self.path = Path(cfg.path).expanduser()

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        if not self.path.is_dir():
            raise CorpusError(f"{self.path}: folder of parquet shards not found (prepare.source"
                              ".path; a local copy: there is no hub access)")  # fmt: skip
        shards = sorted(self.path.rglob("*.parquet"))
        if not shards:
            raise CorpusError(f"{self.path}: no .parquet shards in this folder or below it")
        for shard in shards:
            yield from self._shard(shard)

    def _shard(self, shard: Path) -> Iterator[Entry]:
        pq = pyarrow_parquet()
        cfg = self.cfg
        try:
            names = pq.read_schema(shard).names
            wanted = [c for c in (cfg.id_column, cfg.text_column, cfg.speaker_column) if c in names]
            table = pq.read_table(shard, columns=wanted).to_pydict()
        except (OSError, ValueError) as err:
            raise CorpusError(f"{shard}: cannot read the parquet shard ({err})") from err
        if cfg.audio_column not in names:
            raise CorpusError(f"{shard}: no audio column {cfg.audio_column!r} (columns: "
                              f"{', '.join(names)}; prepare.source.audio_column)")  # fmt: skip
        match = _SHARD.match(shard.stem)
        subset = match["split"] if match else shard.parent.name  # <split>/0000.parquet
        rows = pq.ParquetFile(shard).metadata.num_rows
        ids = table.get(cfg.id_column) or [f"{shard.stem}_{row}" for row in range(rows)]
        for row in range(rows):
            try:
                utt_id = safe_id(str(ids[row]))
            except ValueError as err:
                raise CorpusError(f"{shard}: row {row}: {err}") from err
            yield Entry(
                id=utt_id,
                audio=shard,
                transcript=_text(table, cfg.text_column, row),
                speaker=_text(table, cfg.speaker_column, row),
                split=split_of(subset),
                subset=subset,
                row=row,
                column=cfg.audio_column,
            )


def _text(table: dict, column: str, row: int) -> str:
    value = table[column][row] if column in table else None
    return "" if value is None else str(value)
