"""What a corpus source yields, and the registry of sources."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

from pipeline.audio.files import to_samples
from pipeline.core.errors import CorpusError
from pipeline.core.registry import Registry

SOURCES: Registry = Registry("corpus source")


class Source(Protocol):
    """A corpus source, registered in :data:`SOURCES` under its ``name``, built from its
    ``config_type``."""

    def inputs(self) -> list[tuple[str, Path]]:
        """``(params key, path)`` of each file or folder its settings name, which `prepare`
        checks before any work (none may lie inside an output)."""

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        """The utterances, in the corpus's order (a synthesising source writes its audio into
        ``out_dir``).

        Raises:
            CorpusError: one line naming the file and line (or row) of a malformed entry.
        """


T = TypeVar("T")
_ID_OK = re.compile(r"^[A-Za-z0-9_-]+$")


class Span(NamedTuple):
    """A time range of a recording, in seconds: from ``start`` to ``end`` (Kaldi's segments),
    or for ``duration`` (Lhotse's supervisions and cuts), or to the recording's end."""

    start: Decimal
    end: Decimal | None = None
    duration: Decimal | None = None

    def samples(self, rate: int, total: int) -> tuple[int, int]:
        """``[first, last)``: its samples in a recording of ``total`` samples at ``rate`` Hz,
        each time rounded half up (:func:`to_samples`); a duration becomes a sample count the
        same way, as Lhotse counts it (so ``last`` may be past ``total``: the caller checks)."""
        first = to_samples(self.start, rate)
        if self.duration is not None:
            return first, first + to_samples(self.duration, rate)
        return first, total if self.end is None else to_samples(self.end, rate)


@dataclass(frozen=True)
class Entry:
    """An utterance found by a source, before its audio is checked.

    Attributes:
        id: the utterance id as the source found it (a string, or an integer of an id
            column); prepare checks it and makes it safe (:class:`UtteranceIds`).
        audio: where its bytes are: an audio file, a long recording (with ``span``) or a
            parquet or Arrow file (with ``row`` and ``column``).
        transcript, speaker: as the source found them; prepare makes them strings
            (:func:`text_of`): "" or None when unknown.
        phonemes: "" when unknown.
        split: None when the source does not know it; the prepare stage then assigns one.
        subset: the corpus's own name for the part it comes from ("" when none).
        span: the time range of the recording ``audio`` it is; None: the whole file.
        row: the row of the parquet or Arrow file ``audio`` (0-based, of the whole file).
        column: the file's audio column (a struct of ``bytes`` and ``path``).
        where: where the source lists the utterance (``wav.scp:3``), prefixed to messages.
        error: why the source already knows the entry is unusable (a piped command, an unknown
            recording); prepare counts it as bad audio, so ``--skip-bad`` skips it.
    """

    id: object
    audio: Path
    transcript: object = ""
    speaker: object = ""
    split: str | None = None
    phonemes: str = ""
    subset: str = ""
    span: Span | None = None
    row: int | None = None
    column: str = ""
    where: str = ""
    error: str = ""


def text_of(value: object, where: str, name: str) -> str:
    """A transcript, speaker or id as a source found it, as a string: a string as it is, an
    integer in decimal (an int64 column), None as "".

    Raises:
        CorpusError: ``where: name must be ...``: anything else (a float, a list, a boolean).
    """
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise CorpusError(f"{where}: {name} must be a string, got {value!r}")


class UtteranceIds:
    """The utterance ids of one corpus, made safe (:func:`safe_id`) and checked unique, both as
    the source wrote them and once made safe (``spk-ä1`` and ``spk-ö1`` both become
    ``spk-_1``); each problem is one line naming where both ids are."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, str]] = {}  # safe id -> (as written, where)

    def add(self, raw: object, where: str) -> str:
        """The safe id of the utterance ``where`` lists as ``raw``.

        Raises:
            CorpusError: the id is null, not a string or integer, has no letter or digit, or
                is (or becomes) one an earlier utterance has.
        """
        if raw is None:
            raise CorpusError(f"{where}: the utterance id is null")
        written = text_of(raw, where, "the utterance id")
        try:
            utt_id = safe_id(written)
        except ValueError as err:
            raise CorpusError(f"{where}: {err}") from err
        if utt_id in self._seen:
            first, at = self._seen[utt_id]
            if first == written:
                raise CorpusError(f"{where}: utterance id {written!r} again (first at {at}): "
                                  "each utterance needs an id of its own")  # fmt: skip
            raise CorpusError(
                f"{where}: utterance ids {written!r} and {first!r} (at {at}) both become "
                f"{utt_id!r} (an id keeps letters, digits, - and _): give them ids that differ "
                "in those"
            )
        self._seen[utt_id] = (written, where)
        return utt_id


def keyed(rows: Iterable[tuple[str, str, T]], path: Path, what: str) -> dict[str, tuple[str, T]]:
    """``{key: (where, value)}`` of a file's ``(where, key, value)`` rows, in their order.

    Raises:
        CorpusError: a key twice (a recording named twice, an utterance listed twice), naming
            both places.
    """
    out: dict[str, tuple[str, T]] = {}
    for where, key, value in rows:
        if key in out:
            raise CorpusError(f"{where}: {what} {key!r} again (first at {out[key][0]}): each "
                              f"entry of {path.name} needs a key of its own")  # fmt: skip
        out[key] = (where, value)
    return out


def seconds(value: object, where: str, name: str) -> Decimal:
    """A time in seconds as a corpus wrote it (Kaldi's text, or a JSON number), as the exact
    decimal written (``1.1``, not 1.100000000000000088...).

    Raises:
        CorpusError: naming ``where`` and the field ``name``: not a number, NaN, infinite or
            negative.
    """
    try:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidOperation
        number = Decimal(value if isinstance(value, str) else repr(value))
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or number < 0:
        raise CorpusError(f"{where}: {value!r} is not a time in seconds ({name}: a finite "
                          "number >= 0)")  # fmt: skip
    return number


def span(where: str, start: Decimal, end: Decimal | None = None,
         duration: Decimal | None = None) -> Span:  # fmt: skip
    """The :class:`Span` from ``start`` to ``end`` or for ``duration`` (neither: to the
    recording's end).

    Raises:
        CorpusError: it ends where it starts or before (Kaldi's validate_data_dir.sh and
            lhotse's validators refuse it too).
    """
    if (end is not None and end <= start) or (duration is not None and duration <= 0):
        what = f"ends at {end}" if end is not None else f"lasts {duration} s"
        raise CorpusError(f"{where}: the time range starts at {start} and {what}: it holds "
                          "no audio")  # fmt: skip
    return Span(start, end, duration)


def safe_id(raw: str) -> str:
    """An utterance id usable as a WebDataset key and a file name: ``[A-Za-z0-9_-]+``."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", raw).strip("_")
    if not cleaned or not _ID_OK.match(cleaned):
        raise ValueError(f"cannot make an utterance id from {raw!r}")
    return cleaned


_SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "test": "test", "eval": "test"}


def split_of(name: str) -> str | None:
    """The split a corpus part's name says: ``train*``; ``dev*`` or ``valid*`` (``validation``);
    ``test*`` or ``eval*``; else None (``train-clean-100`` -> train, ``test.other`` -> test)."""
    lowered = name.lower()
    return next((s for prefix, s in _SPLIT_NAMES.items() if lowered.startswith(prefix)), None)
