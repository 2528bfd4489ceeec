"""What a corpus source is and yields (:class:`Source`, :class:`Entry`), the registry of
sources, and the checks every source shares: ids, texts, times, keys."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pipeline.audio.address import Address, Located
from pipeline.audio.files import Span
from pipeline.core.errors import AudioError, CorpusError
from pipeline.core.registry import Registry

SOURCES: Registry = Registry("corpus source")  # filled by pipeline.corpus.sources


class Source(ABC):
    """A corpus source: registered in :data:`SOURCES` under its ``name``, built from its
    settings (``prepare.source`` less its ``kind``), it lists its corpus's utterances.

    Attributes:
        name: its kind (``prepare.source.kind``).
        config_type: the frozen dataclass of its settings.
        summary: what it reads, in a few words (``pipeline prepare --help`` lists it).
        paths: its settings that name files or folders it reads (:meth:`inputs`).
    """

    name: ClassVar[str]
    config_type: ClassVar[type]
    summary: ClassVar[str]
    paths: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def inputs(self) -> list[tuple[str, Path]]:
        """``(params key, path)`` of each file or folder its settings name (the :attr:`paths`
        that are set), which `prepare` checks before any work (none may lie inside an
        output)."""
        named = ((key, getattr(self.cfg, key)) for key in self.paths)
        return [(f"prepare.source.{key}", Path(value).expanduser()) for key, value in named
                if value]  # fmt: skip

    def found(self, key: str, what: str, folder: bool = False) -> Path:
        """The file (or ``folder``) the setting ``key`` names, ``~`` expanded.

        Raises:
            CorpusError: ``<path>: <what> not found (prepare.source.<key>)``.
        """
        path = Path(getattr(self.cfg, key)).expanduser()
        if not (path.is_dir() if folder else path.is_file()):
            raise CorpusError(f"{path}: {what} not found (prepare.source.{key})")
        return path

    @abstractmethod
    def entries(self, out_dir: Path) -> Iterator[Entry]:
        """The utterances, in the corpus's order (a synthesising source writes its audio into
        ``out_dir``).

        Raises:
            CorpusError: one line naming the file and line (or row) of a malformed entry.
        """


T = TypeVar("T")
_ID_OK = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Entry:
    """An utterance found by a source, before its audio is checked.

    Attributes:
        id: the utterance id as the source found it (a string, or an integer of an id
            column); prepare checks it and makes it safe (:class:`UtteranceIds`).
        audio: where its samples are (a whole file, a range of a recording, a table's row).
        transcript, speaker: as the source found them; prepare makes them strings
            (:func:`text_of`): "" or None when unknown.
        phonemes: "" when unknown.
        split: None when the source does not know it; the prepare stage then assigns one.
        subset: the corpus's own name for the part it comes from ("" when none).
        where: where the source lists the utterance (``wav.scp:3``), prefixed to messages.
        error: why the source already knows the entry is unusable (a piped command, an unknown
            recording); prepare counts it as bad audio, so ``--skip-bad`` skips it.
    """

    id: object
    audio: Address
    transcript: object = ""
    speaker: object = ""
    split: str | None = None
    phonemes: str = ""
    subset: str = ""
    where: str = ""
    error: str = ""

    def locate(self) -> Located:
        """Its audio decoded, checked and pinned down (:meth:`Address.locate`).

        Raises:
            AudioError: one line, prefixed with :attr:`where`: the source's own complaint, or
                missing, undecodable, empty, NaN/Inf or out-of-range audio.
        """
        prefix = f"{self.where}: " if self.where else ""
        if self.error:
            raise AudioError(prefix + self.error)
        try:
            return self.audio.locate()
        except AudioError as err:  # named once: a table row's message names its row already
            raise AudioError(f"{'' if str(err).startswith(prefix) else prefix}{err}") from err


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
        utt_id = safe_id(written, where)
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


def safe_id(raw: str, where: str) -> str:
    """An utterance id usable as a WebDataset key and a file name: ``[A-Za-z0-9_-]+``, the
    other characters of ``raw`` made ``_``.

    Raises:
        CorpusError: ``where: cannot make an utterance id from ...``: nothing would be left.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", raw).strip("_")
    if not cleaned or not _ID_OK.match(cleaned):
        raise CorpusError(f"{where}: cannot make an utterance id from {raw!r}")
    return cleaned


_SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "test": "test", "eval": "test"}


def split_of(name: str) -> str | None:
    """The split a corpus part's name says: ``train*``; ``dev*`` or ``valid*`` (``validation``);
    ``test*`` or ``eval*``; else None (``train-clean-100`` -> train, ``test.other`` -> test)."""
    lowered = name.lower()
    return next((s for prefix, s in _SPLIT_NAMES.items() if lowered.startswith(prefix)), None)
