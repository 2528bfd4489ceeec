"""What a corpus source yields, and the registry of sources."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple, Protocol

from pipeline.audio.files import to_samples
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
        id: the utterance id (:func:`safe_id`).
        audio: where its bytes are: an audio file, a long recording (with ``span``) or a
            parquet or Arrow file (with ``row`` and ``column``).
        transcript, speaker, phonemes: "" when unknown.
        split: None when the source does not know it; the prepare stage then assigns one.
        subset: the corpus's own name for the part it comes from ("" when none).
        span: the time range of the recording ``audio`` it is; None: the whole file.
        row: the row of the parquet or Arrow file ``audio`` (0-based, of the whole file).
        column: the file's audio column (a struct of ``bytes`` and ``path``).
        where: where the source lists the utterance (``wav.scp:3``), prefixed to messages.
        error: why the source already knows the entry is unusable (a piped command, an unknown
            recording); prepare counts it as bad audio, so ``--skip-bad`` skips it.
    """

    id: str
    audio: Path
    transcript: str = ""
    speaker: str = ""
    split: str | None = None
    phonemes: str = ""
    subset: str = ""
    span: Span | None = None
    row: int | None = None
    column: str = ""
    where: str = ""
    error: str = ""


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
