"""Corpus sources for `pipeline prepare`: the offline demo, LibriSpeech folders, user lists."""

from pipeline.corpus import demo, librispeech, listing  # noqa: F401  (register the sources)
from pipeline.corpus.source import SOURCES, Entry
from pipeline.errors import CorpusError

__all__ = ["SOURCES", "CorpusError", "Entry"]
