"""Every corpus source, registered: the offline demo, LibriSpeech folders, user lists, Kaldi
data directories, Lhotse manifests and `datasets` parquet shards. The one list of the kinds
``prepare.source`` may name: `pipeline prepare --help`, params.yaml's comments and the docs are
checked against it."""

from __future__ import annotations

import dataclasses

from pipeline.corpus import (  # noqa: F401  (register the sources)
    demo,
    hf_datasets,
    kaldi,
    lhotse_manifests,
    librispeech,
    listing,
)
from pipeline.corpus.base import SOURCES, Entry, Source

__all__ = ["SOURCES", "Entry", "Source", "described"]


def described() -> list[str]:
    """One line per registered source: ``<kind> (<its settings>): <what it reads>``."""
    lines = []
    for name in SOURCES.names():
        source = SOURCES[name]
        keys = ", ".join(f.name for f in dataclasses.fields(source.config_type))
        lines.append(f"{name} ({keys}): {source.summary}")
    return lines
