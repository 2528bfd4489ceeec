"""Lhotse manifests (the k2/icefall convention): a cut set, or recordings with supervisions,
as ``.jsonl`` or ``.jsonl.gz``, read through lhotse itself (an optional extra)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.audio.files import AudioFile, FileRange, Span
from pipeline.core.errors import CorpusError
from pipeline.corpus.base import SOURCES, Entry, Source, keyed, seconds, span, text_of
from pipeline.corpus.lines import json_lines


@dataclass(frozen=True)
class LhotseConfig:
    """Give ``cuts``, or ``recordings`` with (or without) ``supervisions``.

    Attributes:
        cuts: a cut set: each mono or multi-channel cut is an utterance, a time range of its
            recording (mixed cuts have no single recording and are bad entries).
        recordings: a recording set; with ``supervisions``, each supervision is an utterance
            (a time range of its recording); without, each whole recording is one.
        supervisions: a supervision set over ``recordings``.
        root: the folder relative audio paths start from; "" = the manifest's folder.
    """

    cuts: str = ""
    recordings: str = ""
    supervisions: str = ""
    root: str = ""

    def __post_init__(self) -> None:
        if bool(self.cuts) == bool(self.recordings):
            raise ValueError("give either cuts or recordings (with or without supervisions)")
        if self.supervisions and not self.recordings:
            raise ValueError("supervisions need the recordings they point into")


def _lhotse() -> Any:
    try:
        import lhotse.serialization
    except ImportError as err:
        raise ImportError(
            "prepare.source kind lhotse needs lhotse: pip install 'hubert-kd[corpora]' (or lhotse)"
        ) from err
    return lhotse.serialization


@SOURCES.register
class LhotseSource(Source):
    """Utterances of a Lhotse cut set or supervision set. Each recording must be one audio
    file (any channel count: channels are averaged, whichever a cut or supervision names);
    a recording read from a URL, a command or memory, split over several files, or with
    transforms other than resampling is a bad entry, named with its manifest line.

    What lhotse's validators refuse stops the stage, naming the line: an id twice (a
    recording, a cut or a supervision), a start or duration that is not a number of seconds
    (a string, NaN, infinite, negative) or a duration that is not positive, a cut's
    supervision of another recording; and so do a text or speaker that is not a string."""

    name = "lhotse"
    config_type = LhotseConfig
    summary = "Lhotse manifests: a cut set, or recordings (with supervisions)"
    paths = ("cuts", "recordings", "supervisions", "root")

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        if self.cfg.cuts:
            for where, cut in _items(self.found("cuts", "Lhotse cut set")):
                yield self._cut(where, cut)
            return
        path = self.found("recordings", "Lhotse recording set")
        rows = ((w, text_of(r.id, w, "the recording id"), r) for w, r in _items(path))
        recordings = keyed(rows, path, "recording")
        if not self.cfg.supervisions:
            for where, rec in recordings.values():
                yield _entry(where, rec.id, self._recording(rec))
            return
        for where, sup in _items(self.found("supervisions", "Lhotse supervision set")):
            times = _span(where, sup)
            rec = sup.recording_id
            if not isinstance(rec, (str, int)) or rec not in recordings:
                unknown = Entry(id="", audio=AudioFile(path),
                                error=f"recording {rec!r} is not in {path}")  # fmt: skip
                yield _entry(where, sup.id, unknown, [sup], times)
                continue
            yield _entry(where, sup.id, self._recording(recordings[rec][1]), [sup], times)

    def _cut(self, where: str, cut: Any) -> Entry:
        recording = getattr(cut, "recording", None)
        if recording is None:
            error = f"a {type(cut).__name__} has no recording of its own to cut from"
            return _entry(where, cut.id, Entry(id="", audio=AudioFile(self.cfg.cuts), error=error))
        for sup in cut.supervisions:
            if sup.recording_id != recording.id:
                raise CorpusError(
                    f"{where}: supervision {sup.id!r} is of recording "
                    f"{sup.recording_id!r}, not the cut's {recording.id!r}"
                )
        return _entry(where, cut.id, self._recording(recording), cut.supervisions,
                      _span(where, cut))  # fmt: skip

    def _recording(self, recording: Any) -> Entry:
        """The recording as an entry: its file (relative paths from ``root``), and what is
        wrong with it (its ``error``)."""
        manifest = Path(self.cfg.cuts or self.cfg.recordings).expanduser()
        root = Path(self.cfg.root).expanduser() if self.cfg.root else manifest.parent
        sources = recording.sources
        error = ""
        if len(sources) != 1 or sources[0].type != "file":
            kinds = ", ".join(str(s.type) for s in sources)
            error = (f"recording {recording.id!r} comes from {len(sources)} source(s) ({kinds}); "
                     "hubert-kd reads recordings held in one file")  # fmt: skip
        elif others := _transforms(recording):
            error = (f"recording {recording.id!r} has transforms {others}; hubert-kd reads "
                     "recordings as stored (resampling aside)")  # fmt: skip
        elif not isinstance(sources[0].source, str) or not sources[0].source:
            error = (f"recording {recording.id!r}: its source must be a file's path, got "
                     f"{sources[0].source!r}")  # fmt: skip
        if error:
            return Entry(id=recording.id, audio=AudioFile(manifest), error=error)
        path = Path(sources[0].source).expanduser()
        return Entry(id=recording.id, audio=AudioFile(path if path.is_absolute() else root / path))


def _items(path: Path) -> Iterator[tuple[str, Any]]:
    """``(path:line, lhotse object)`` for each line of a jsonl(.gz) manifest.

    Raises:
        CorpusError: naming the line: not JSON or not a Lhotse item; or a manifest with no
            items at all.
    """
    serialization = _lhotse()
    empty = True
    for where, value in json_lines(path, what="Lhotse manifest"):
        try:
            item = serialization.deserialize_item(value)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise CorpusError(f"{where}: not a Lhotse manifest item ({err})") from err
        empty = False
        yield where, item
    if empty:
        raise CorpusError(f"{path}: lists no Lhotse items")


def _transforms(recording: Any) -> list:
    """The names of a recording's transforms other than resampling."""
    transforms = [t if isinstance(t, dict) else t.to_dict() for t in recording.transforms or []]
    return [t.get("name") for t in transforms if t.get("name") != "Resample"]


def _span(where: str, item: Any) -> Span:
    """A cut's or supervision's time range: a start >= 0 and a positive duration."""
    start, duration = (seconds(_time(where, item, n), where, n) for n in ("start", "duration"))
    return span(where, start, duration=duration)


def _time(where: str, item: Any, name: str) -> float:
    """Field ``name`` of a Lhotse item: a finite JSON number (a string is not one)."""
    value = getattr(item, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CorpusError(f"{where}: {name} must be a number of seconds, got {value!r}")
    return value


def _entry(where: str, raw_id: object, recording: Entry, supervisions=(),
           times: Span | None = None) -> Entry:  # fmt: skip
    """The utterance ``raw_id`` listed at ``where``: its ``recording`` (whole, or the time range
    ``times`` of it), its words and speaker from its ``supervisions``."""
    sups = sorted(supervisions, key=lambda s: _time(where, s, "start"))  # may start before a cut
    texts = [text_of(s.text, where, f"the text of supervision {s.id!r}") for s in sups]
    speakers = [text_of(s.speaker, where, f"the speaker of supervision {s.id!r}") for s in sups]
    path = recording.audio.path
    return Entry(
        id=raw_id,
        audio=AudioFile(path) if times is None else FileRange(path, span=times),
        transcript=" ".join(text for text in texts if text),
        speaker=next((speaker for speaker in speakers if speaker), ""),
        where=where,
        error=recording.error,
    )
