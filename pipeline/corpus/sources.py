"""Every corpus source, registered: the offline demo, LibriSpeech folders, user lists."""

from pipeline.corpus import demo, librispeech, listing  # noqa: F401  (register the sources)
from pipeline.corpus.base import SOURCES, Entry

__all__ = ["SOURCES", "Entry"]
