"""What a corpus source yields, and the registry of sources."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.registry import Registry

SOURCES: Registry = Registry("corpus source")

_ID_OK = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Entry:
    """An utterance found by a source, before its audio is checked.

    ``split`` is None when the source does not know it; the prepare stage then assigns one.
    """

    id: str
    audio: Path
    transcript: str = ""
    speaker: str = ""
    split: str | None = None
    phonemes: str = ""
    subset: str = ""


def safe_id(raw: str) -> str:
    """An utterance id usable as a WebDataset key and a file name: ``[A-Za-z0-9_-]+``."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", raw).strip("_")
    if not cleaned or not _ID_OK.match(cleaned):
        raise ValueError(f"cannot make an utterance id from {raw!r}")
    return cleaned
