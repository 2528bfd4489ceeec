"""LibriSpeech-style folders: ``<speaker>/<chapter>/<spk>-<ch>-<n>.flac`` + ``*.trans.txt``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.audio.files import AudioFile
from pipeline.core.errors import CorpusError
from pipeline.corpus.base import SOURCES, Entry, Source, split_of
from pipeline.corpus.lines import numbered_lines


@dataclass(frozen=True)
class LibriSpeechConfig:
    """Attributes:
    root: a subset folder (``.../train-clean-100``) or a folder of subsets (``LibriSpeech/``).
    """

    root: str


def _is_subset(folder: Path) -> bool:
    return any(p.is_dir() and p.name.isdigit() for p in folder.iterdir())


@SOURCES.register
class LibriSpeechSource(Source):
    """Every utterance listed in a ``*.trans.txt``; the split comes from the subset name
    (``train-*``, ``dev-*``, ``test-*``), which each row also keeps (``test-other``)."""

    name = "librispeech"
    config_type = LibriSpeechConfig
    summary = "LibriSpeech folders: <speaker>/<chapter>/*.flac and *.trans.txt"
    paths = ("root",)

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        root = self.found("root", "LibriSpeech folder", folder=True)
        subsets = (
            [root]
            if _is_subset(root)
            else sorted(p for p in root.iterdir() if p.is_dir() and _is_subset(p))
        )
        if not subsets:
            raise CorpusError(
                f"{root}: no <speaker>/<chapter>/ folders found; point "
                "prepare.source.root at a subset such as train-clean-100 or at its parent"
            )
        for subset in subsets:
            split = split_of(subset.name)
            for trans in sorted(subset.glob("*/*/*.trans.txt")):
                yield from self._chapter(trans, split, subset.name)

    def _chapter(self, trans: Path, split: str | None, subset: str) -> Iterator[Entry]:
        """The utterances of a chapter's ``<speaker>-<chapter>.trans.txt``: each line
        ``<speaker>-<chapter>-<n> TRANSCRIPT``, its audio ``<id>.flac`` beside it.

        Raises:
            CorpusError: naming the line: no transcript, or an id of another chapter (its
                speaker would be wrong) or not a file name.
        """
        speaker, chapter = trans.parent.parent.name, trans.parent.name
        for where, line in numbered_lines(trans):
            utt_id, _, text = line.partition(" ")
            if not text:
                raise CorpusError(f"{where}: expected '<utterance-id> <TRANSCRIPT>'")
            if not utt_id.startswith(f"{speaker}-{chapter}-") or "/" in utt_id:
                raise CorpusError(f"{where}: {utt_id!r} is not an utterance of this chapter "
                                  f"('{speaker}-{chapter}-<n>', as its folder says)")  # fmt: skip
            yield Entry(id=utt_id, audio=AudioFile(trans.parent / f"{utt_id}.flac"),
                        transcript=text.strip(), speaker=speaker, split=split, subset=subset,
                        where=where)  # fmt: skip
