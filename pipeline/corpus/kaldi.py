"""Kaldi/ESPnet data directories: ``wav.scp``, optional ``segments``, ``text`` and ``utt2spk``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from pipeline.core.errors import CorpusError
from pipeline.corpus.base import SOURCES, Entry, Span, safe_id, split_of


@dataclass(frozen=True)
class KaldiConfig:
    """Attributes:
    dir: a data directory (holding ``wav.scp``) or a folder of them (``data/`` with
        ``train/``, ``dev/``, ``test/``); each directory's name gives its rows' subset and,
        by its prefix (``train*``, ``dev*``/``valid*``, ``test*``/``eval*``), their split.
    root: the folder relative ``wav.scp`` paths start from (Kaldi's: the recipe folder the
        scripts ran in); "" = the data directory.
    """

    dir: str
    root: str = ""


@SOURCES.register
class KaldiSource:
    """One utterance per ``segments`` line (a time range of a ``wav.scp`` recording), or per
    ``wav.scp`` line where there is no ``segments``; words from ``text``, speakers from
    ``utt2spk``, both optional. ``wav.scp`` must name files: a piped command (``... |``) is a
    bad entry, named with its line."""

    name = "kaldi"
    config_type = KaldiConfig

    def __init__(self, cfg: KaldiConfig) -> None:
        self.dir = Path(cfg.dir).expanduser()
        self.root = Path(cfg.root).expanduser() if cfg.root else None

    def inputs(self) -> list[tuple[str, Path]]:
        return [("prepare.source.dir", self.dir)]

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        if not self.dir.is_dir():
            raise CorpusError(f"{self.dir}: Kaldi data directory not found (prepare.source.dir)")
        if (self.dir / "wav.scp").is_file():
            folders = [self.dir]
        else:
            folders = sorted(p.parent for p in self.dir.glob("*/wav.scp"))
        if not folders:
            raise CorpusError(f"{self.dir}: no wav.scp here or in its subfolders")
        for folder in folders:
            yield from self._folder(folder)

    def _folder(self, folder: Path) -> Iterator[Entry]:
        root = self.root or folder
        recordings = {rec: entry for rec, entry in _recordings(folder / "wav.scp", root)}
        text = dict(_table(folder / "text"))
        speakers = dict(_table(folder / "utt2spk"))
        common = {"split": split_of(folder.name), "subset": folder.name}
        if not (folder / "segments").is_file():
            for rec, entry in recordings.items():
                yield _named(entry, rec, text.get(rec, ""), speakers.get(rec, ""), common)
            return
        for where, (utt, rec, start, end) in _lines(folder / "segments", 4):
            span = Span(_seconds(start, where), None if end == "-1" else _seconds(end, where))
            recording = recordings.get(rec)
            if recording is None:
                audio, error = folder / "wav.scp", f"recording {rec!r} is not in wav.scp"
            else:  # a bad recording makes each of its segments bad, naming its line
                error = recording.error and f"{recording.where}: {recording.error}"
                audio = recording.audio
            entry = Entry(id=utt, audio=audio, span=span, where=where, error=error)
            yield _named(entry, utt, text.get(utt, ""), speakers.get(utt, ""), common)


def _recordings(path: Path, root: Path) -> Iterator[tuple[str, Entry]]:
    for where, (rec, location) in _lines(path, 2):
        error = ""
        if location.endswith("|"):
            error = (f"{location!r} is a piped command, not a file: write the audio to files "
                     "(e.g. with Kaldi's wav-copy) and list them")  # fmt: skip
        audio = Path(location).expanduser()
        yield rec, Entry(id=rec, audio=audio if audio.is_absolute() else root / audio,
                         where=where, error=error)  # fmt: skip


def _named(entry: Entry, raw_id: str, transcript: str, speaker: str, common: dict) -> Entry:
    try:
        utt_id = safe_id(raw_id)
    except ValueError as err:
        raise CorpusError(f"{entry.where}: {err}") from err
    return Entry(
        id=utt_id, audio=entry.audio, transcript=transcript, speaker=speaker, span=entry.span,
        where=entry.where, error=entry.error, **common,
    )  # fmt: skip


def _table(path: Path) -> Iterator[tuple[str, str]]:
    """``key rest-of-line`` pairs of an optional Kaldi table (``text``, ``utt2spk``)."""
    if path.is_file():
        yield from (fields for _, fields in _lines(path, 2, at_least=1))


def _lines(path: Path, columns: int, at_least: int | None = None) -> Iterator[tuple[str, list]]:
    """``(path:line, fields)`` of each non-empty line, split on whitespace into ``columns``
    fields (the last one taking the rest of the line), padded with "" down to ``at_least``.

    Raises:
        CorpusError: naming the file and line, for a line with too few fields or a file that
            is not UTF-8.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as err:
        raise CorpusError(f"{path}: not found") from err
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    least = columns if at_least is None else at_least
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.strip().split(None, columns - 1)
        if len(fields) < least:
            raise CorpusError(f"{path}:{lineno}: expected {columns} fields, got {line.strip()!r}")
        yield f"{path}:{lineno}", fields + [""] * (columns - len(fields))


def _seconds(text: str, where: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as err:
        raise CorpusError(f"{where}: {text!r} is not a time in seconds") from err
    if not value.is_finite() or value < 0:
        raise CorpusError(f"{where}: {text!r} is not a time in seconds")
    return value
