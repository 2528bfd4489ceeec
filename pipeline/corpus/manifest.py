"""The corpus manifest: one JSON line per utterance."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from pipeline.audio.batching import length_batches
from pipeline.audio.embedded import embedded_audio
from pipeline.audio.files import read_range
from pipeline.core.config import from_dict
from pipeline.core.errors import ConfigError, ManifestError
from pipeline.core.io import atomic_write_text

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Utterance:
    """One manifest row. Its audio is named by where its bytes are (:func:`read_utterance`):
    a whole file; the samples ``[start, start + samples)`` of a longer recording (a Kaldi
    segment, a Lhotse supervision or cut); or the encoded file in row ``row`` of column
    ``column`` of a parquet shard or Arrow file (the `datasets` layouts).

    Attributes:
        id: unique utterance id (letters, digits, ``-`` and ``_``; no dots, for WebDataset keys).
        audio: path to the audio file, the recording or the table file; a relative path is
            relative to the corpus's audio root (:func:`audio_root`), so a corpus can move
            without changing its manifest.
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
        start: the utterance's first sample within ``audio`` (0 for a whole file).
        row: the row (0-based) of the parquet or Arrow file ``audio``; None when ``audio`` is
            an audio file.
        column: that file's audio column ("" when ``audio`` is an audio file).
    """

    id: str
    audio: str
    samples: int
    sample_rate: int
    transcript: str
    speaker: str
    split: str
    phonemes: str = ""
    subset: str = ""
    sha256: str = ""
    start: int = 0
    row: int | None = None
    column: str = ""

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
    """The audio path of ``utt`` listed in ``manifest``."""
    path = Path(utt.audio)
    return path if path.is_absolute() else audio_root(manifest) / path


def read_utterance(utt: Utterance, manifest: Path) -> torch.Tensor:
    """The audio of ``utt`` (listed in ``manifest``), wherever its bytes are, as a mono float32
    waveform at 16 kHz, shape ``(samples,)``: a file, the utterance's range of a recording
    (found by seeking), or the audio embedded in a table's row. Every stage reads audio here.

    Raises:
        AudioError: naming the file (and row): missing, unreadable or changed audio.
    """
    path = audio_path(utt, manifest)
    if utt.row is None:
        return read_range(path, path, utt.start, utt.samples)
    data = io.BytesIO(embedded_audio(path, utt.row, utt.column))
    return read_range(data, f"{path}: row {utt.row}", utt.start, utt.samples)


def audio_batches(
    utts: list[Utterance], manifest: Path, batch_seconds: float
) -> Iterator[tuple[list[Utterance], torch.Tensor, torch.Tensor]]:
    """Length-sorted batches ``(utterances, wav (B, S) zero-padded, lengths (B,))`` of at most
    ``batch_seconds`` of padded audio (at least one utterance each)."""
    for group in length_batches(utts, lambda u: u.seconds, batch_seconds):
        wavs = [read_utterance(u, manifest) for u in group]
        yield group, pad_sequence(wavs, batch_first=True), torch.tensor([len(w) for w in wavs])


_ADDRESS = {"start": 0, "row": None, "column": ""}  # written only where a row needs them


def write_manifest(path: Path, utterances: Iterable[Utterance]) -> None:
    """Write rows as JSONL, atomically. The address fields beyond a file's path (``start``,
    ``row``, ``column``) are left out where they hold their defaults, so a corpus of whole
    files keeps the manifest it always had, byte for byte."""
    lines = [json.dumps(_row(u), ensure_ascii=False) for u in utterances]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _row(utt: Utterance) -> dict:
    """The row's fields in order, less the address fields at their defaults (a shallow copy:
    ``dataclasses.asdict`` deep-copies every value, a third of a millisecond a row)."""
    row = {f.name: getattr(utt, f.name) for f in dataclasses.fields(utt)}
    return {k: v for k, v in row.items() if k not in _ADDRESS or v != _ADDRESS[k]}


def read_manifest(path: Path, split: str | None = None) -> list[Utterance]:
    """Read a JSONL manifest, optionally keeping one split.

    Raises:
        ManifestError: naming the file and line of a malformed row.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (run `pipeline prepare` first)")
    rows = []
    names = {f.name for f in dataclasses.fields(Utterance)}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot read the manifest ({err})") from err
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(f"{where}: bad manifest row ({err})") from err
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: bad manifest row (a JSON object expected)")
        try:
            utt = from_dict(Utterance, {k: v for k, v in raw.items() if k in names}, where)
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
