"""Kaldi/ESPnet data directories: ``wav.scp``, optional ``segments``, ``text`` and ``utt2spk``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.audio.files import AudioFile, FileRange
from pipeline.core.errors import CorpusError
from pipeline.corpus.base import SOURCES, Entry, Source, keyed, seconds, span, split_of
from pipeline.corpus.lines import numbered_lines


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
class KaldiSource(Source):
    """One utterance per ``segments`` line (a time range of a ``wav.scp`` recording), or per
    ``wav.scp`` line where there is no ``segments``; words from ``text``, speakers from
    ``utt2spk``, both optional. ``wav.scp`` must name files: a piped command (``... |``) is a
    bad entry, named with its line.

    What Kaldi's ``utils/validate_data_dir.sh`` refuses stops the stage, naming the line: a key
    twice in one file (a recording named twice would cut segments from the wrong file), a
    ``text`` or ``utt2spk`` that does not list exactly the utterances (a line for one that
    does not exist, or none for one that does), a time range that ends where it starts or
    before, an empty ``wav.scp`` or ``segments``. Keys need not be sorted."""

    name = "kaldi"
    config_type = KaldiConfig
    summary = "a Kaldi or ESPnet data directory: wav.scp, optional segments, text, utt2spk"
    paths = ("dir",)

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        top = self.found("dir", "Kaldi data directory", folder=True)
        if (top / "wav.scp").is_file():
            folders = [top]
        else:
            folders = sorted(p.parent for p in top.glob("*/wav.scp"))
        if not folders:
            raise CorpusError(f"{top}: no wav.scp here or in its subfolders")
        for folder in folders:
            yield from self._folder(folder)

    def _folder(self, folder: Path) -> Iterator[Entry]:
        root = Path(self.cfg.root).expanduser() if self.cfg.root else folder
        scp = folder / "wav.scp"
        recordings = keyed(((w, rec, _recording(w, loc, root)) for w, (rec, loc) in
                              _lines(scp, 2)), scp, "recording")  # fmt: skip
        listing = folder / "segments" if (folder / "segments").is_file() else scp
        utts = recordings  # each recording an utterance, unless segments cut them
        if listing != scp:
            rows = ((w, f[0], _segment(w, f, recordings, scp)) for w, f in _lines(listing, 4))
            utts = keyed(rows, listing, "utterance")
        if not utts:
            raise CorpusError(f"{listing}: lists no utterances")
        text = _table(folder / "text", utts, listing, least=1)
        speakers = _table(folder / "utt2spk", utts, listing, least=2)
        common = {"split": split_of(folder.name), "subset": folder.name}
        for utt, (where, entry) in utts.items():
            yield dataclasses.replace(entry, id=utt, where=where, transcript=text.get(utt, ""),
                                      speaker=speakers.get(utt, ""), **common)  # fmt: skip


def _recording(where: str, location: str, root: Path) -> Entry:
    error = ""
    if location.endswith("|"):
        error = (f"{location!r} is a piped command, not a file: write the audio to files "
                 "(e.g. with Kaldi's wav-copy) and list them")  # fmt: skip
    audio = Path(location).expanduser()
    return Entry(id="", audio=AudioFile(audio if audio.is_absolute() else root / audio),
                 where=where, error=error)  # fmt: skip


def _segment(where: str, fields: list[str], recordings: dict, scp: Path) -> Entry:
    """A ``segments`` line's utterance: a time range of its ``wav.scp`` recording."""
    utt, rec, start, end = fields
    first = seconds(start, where, "start")
    times = span(where, first, None if end == "-1" else seconds(end, where, "end"))
    if rec not in recordings:
        return Entry(id=utt, audio=FileRange(scp, span=times),
                     error=f"recording {rec!r} is not in wav.scp")  # fmt: skip
    rec_where, recording = recordings[rec]  # a bad recording makes each segment bad, naming it
    error = recording.error and f"{rec_where}: {recording.error}"
    return Entry(id=utt, audio=FileRange(recording.audio.path, span=times), error=error)


def _table(path: Path, utts: dict, listing: Path, least: int) -> dict[str, str]:
    """An optional Kaldi table (``text``, ``utt2spk``: ``key rest-of-line``) by utterance,
    {} if absent; present, it lists each utterance of ``utts`` (from ``listing``) once.

    Raises:
        CorpusError: naming the line or utterance: a key twice, a line for an utterance that
            does not exist (a typo: its utterance would get nothing), none for one that does.
    """
    if not path.is_file():
        return {}
    rows = ((where, fields[0], fields[1]) for where, fields in _lines(path, 2, at_least=least))
    table = keyed(rows, path, "utterance")
    hint = "Kaldi's utils/fix_data_dir.sh keeps the utterances every file lists"
    for key, (where, _) in table.items():
        if key not in utts:
            raise CorpusError(f"{where}: {key!r} is not an utterance of {listing} (a typo? "
                              f"{hint})")  # fmt: skip
    for key, (where, _) in utts.items():
        if key not in table:
            raise CorpusError(f"{path}: no line for utterance {key!r} of {where} ({hint})")
    return {key: value for key, (_, value) in table.items()}


def _lines(path: Path, columns: int, at_least: int | None = None) -> Iterator[tuple[str, list]]:
    """``(path:line, fields)`` of each non-empty line, split on whitespace into ``columns``
    fields (the last one taking the rest of the line), padded with "" down to ``at_least``.

    Raises:
        CorpusError: naming the file and line, for a line with too few fields or a file that
            is not UTF-8.
    """
    least = columns if at_least is None else at_least
    for where, line in numbered_lines(path):
        fields = line.strip().split(None, columns - 1)
        if len(fields) < least:
            raise CorpusError(f"{where}: expected {columns} fields, got {line.strip()!r}")
        yield where, fields + [""] * (columns - len(fields))
