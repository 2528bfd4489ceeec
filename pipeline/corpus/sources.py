"""Every corpus source, registered: the offline demo, LibriSpeech folders, user lists, Kaldi
data directories, Lhotse manifests and `datasets` parquet shards."""

from pipeline.corpus import (  # noqa: F401  (register the sources)
    demo,
    hf_datasets,
    kaldi,
    lhotse_manifests,
    librispeech,
    listing,
)
from pipeline.corpus.base import SOURCES, Entry

__all__ = ["SOURCES", "Entry"]
