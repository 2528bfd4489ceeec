"""The corpus manifest: one JSON line per utterance."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from pipeline.audio.addresses import Address, address_of
from pipeline.audio.batching import length_batches
from pipeline.audio.files import AudioFile
from pipeline.core.config import from_dict
from pipeline.core.errors import ConfigError, ManifestError
from pipeline.core.io import atomic_write_text
from pipeline.corpus.lines import json_lines

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Utterance:
    """One manifest row. Its audio is named by where its bytes are (:func:`read_utterance`):
    a whole file; the samples ``[start, start + samples)`` of a longer recording (a Kaldi
    segment, a Lhotse supervision or cut); or the encoded file in row ``row`` of column
    ``column`` of a parquet shard or Arrow file (the `datasets` layouts).

    Attributes:
        id: unique utterance id (letters, digits, ``-`` and ``_``; no dots, for WebDataset keys).
        audio: where its samples are (:mod:`pipeline.audio.addresses`; a path alone, a string
            or a :class:`~pathlib.Path`, is a whole file): the path of the audio file, the
            recording or the table file, and what else its kind needs (``start``; ``row`` and
            ``column``), written into the row after ``sha256`` where not at their defaults. A
            relative path is relative to the corpus's audio root (:func:`audio_root`), so a
            corpus can move without changing its manifest.
        samples: the utterance's number of samples at its own ``sample_rate``.
        sample_rate: the audio's sample rate in Hz (loaders resample to 16 kHz).
        transcript: the words spoken ("" when unknown).
        speaker: speaker id ("" when unknown).
        split: one of ``train``, ``dev``, ``test``.
        phonemes: optional phoneme transcript (space-separated), "" when unknown.
        subset: the corpus's own subset name (LibriSpeech: ``train-clean-100``, ``test-other``,
            ...), "" when it has none; evaluation can name subsets as well as splits.
        sha256: the sha256 of the bytes the utterance uses ("" when unknown): the audio file's
            bytes; a table cell's embedded bytes; for a range of a recording, its decoded
            samples (float32, little-endian, channels interleaved, at the file's rate). The
            manifest changes exactly when the audio does, wherever it lives.
    """

    id: str
    audio: Address
    samples: int
    sample_rate: int
    transcript: str
    speaker: str
    split: str
    phonemes: str = ""
    subset: str = ""
    sha256: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.audio, (str, Path)):
            object.__setattr__(self, "audio", AudioFile(Path(self.audio)))

    def belongs_to(self, name: str) -> bool:
        """Whether this row is in split or subset ``name`` (``test``, ``test-other``, ...)."""
        return name in (self.split, self.subset)

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


SUMMARY = "summary.json"  # beside the manifest: the corpus's statistics and its audio root

_ROOTS: dict[tuple[str, int], Path] = {}


def audio_root(manifest: Path) -> Path:
    """Where the relative audio paths of ``manifest`` start: the ``audio_root`` recorded in
    ``summary.json`` beside it by `prepare` (relative to the manifest's folder, or absolute),
    else the manifest's own folder."""
    folder = Path(manifest).parent
    try:
        stamp = (folder / SUMMARY).stat().st_mtime_ns
    except OSError:
        return folder
    if (str(folder), stamp) not in _ROOTS:
        try:
            root = json.loads((folder / SUMMARY).read_text()).get("audio_root", ".")
        except (OSError, ValueError, AttributeError):
            root = "."
        _ROOTS[(str(folder), stamp)] = folder / root
    return _ROOTS[(str(folder), stamp)]


def audio_path(utt: Utterance, manifest: Path) -> Path:
    """The path of the file holding the audio of ``utt``, listed in ``manifest``."""
    return utt.audio.under(audio_root(manifest)).path


def read_utterance(utt: Utterance, manifest: Path) -> torch.Tensor:
    """The audio of ``utt`` (listed in ``manifest``), wherever its bytes are, as a mono float32
    waveform at 16 kHz, shape ``(samples,)``: read as its address's kind reads it (a file, the
    utterance's range of a recording found by seeking, the audio embedded in a table's row).
    Every stage reads audio here.

    Raises:
        AudioError: naming the file (and row): missing, unreadable or changed audio.
    """
    return utt.audio.under(audio_root(manifest)).read(utt.samples)


def audio_batches(
    utts: list[Utterance], manifest: Path, batch_seconds: float
) -> Iterator[tuple[list[Utterance], torch.Tensor, torch.Tensor]]:
    """Length-sorted batches ``(utterances, wav (B, S) zero-padded, lengths (B,))`` of at most
    ``batch_seconds`` of padded audio (at least one utterance each)."""
    for group in length_batches(utts, lambda u: u.seconds, batch_seconds):
        wavs = [read_utterance(u, manifest) for u in group]
        yield group, pad_sequence(wavs, batch_first=True), torch.tensor([len(w) for w in wavs])


def write_manifest(path: Path, utterances: Iterable[Utterance]) -> None:
    """Write rows as JSONL, atomically. An address writes its path as ``audio`` and, after the
    other fields, only those of its own fields that are not at their defaults, so a corpus of
    whole files keeps the manifest it always had, byte for byte."""
    lines = [json.dumps(_row(u), ensure_ascii=False) for u in utterances]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _row(utt: Utterance) -> dict:
    """The row's fields in order (a shallow copy: ``dataclasses.asdict`` deep-copies every
    value, a third of a millisecond a row), then its address's own."""
    row = {f.name: getattr(utt, f.name) for f in dataclasses.fields(utt)}
    row["audio"] = utt.audio.path.as_posix()
    return row | utt.audio.manifest_keys()


def read_manifest(path: Path, split: str | None = None) -> list[Utterance]:
    """Read a JSONL manifest, optionally keeping one split; each row's address is of the kind
    its keys name (:func:`~pipeline.audio.address.address_of`); keys no field has are ignored.

    Raises:
        ManifestError: naming the file and line of a malformed row.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (run `pipeline prepare` first)")
    rows = []
    names = {f.name for f in dataclasses.fields(Utterance)} - {"audio"}
    for where, raw in json_lines(path, ManifestError, "manifest"):
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: bad manifest row (a JSON object expected)")
        try:
            fields = {k: v for k, v in raw.items() if k in names}
            utt = from_dict(Utterance, {**fields, "audio": address_of(raw, where)}, where)
        except ConfigError as err:
            raise ManifestError(f"bad manifest row: {err}") from err
        if split is None or utt.split == split:
            rows.append(utt)
    return rows


def corpus_fingerprint(utterances: Iterable[Utterance]) -> str:
    """sha256 over each row's id, split, length and transcript (not its path): the same corpus
    regenerated elsewhere keeps it, a changed generator or another corpus does not."""
    import hashlib

    digest = hashlib.sha256()
    for u in sorted(utterances, key=lambda u: u.id):
        digest.update(f"{u.id}\t{u.split}\t{u.samples}\t{u.sample_rate}\t{u.transcript}\n".encode())
    return digest.hexdigest()
