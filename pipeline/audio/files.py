"""Audio input: read any soundfile-readable file, or a sample range of one, as 16 kHz mono
float32, or fail naming it; and the two addresses of samples in such files: a whole file
(:class:`AudioFile`) and a range of a longer recording (:class:`FileRange`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from pipeline.audio.address import ADDRESSES, Address, Located
from pipeline.core.errors import AudioError, single_line
from pipeline.core.hashing import sha256_bytes, sha256_file
from pipeline.nn.frames import SAMPLE_RATE


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Resample the last axis of ``wav`` with torchaudio's windowed-sinc resampler."""
    if orig_rate == new_rate:
        return wav
    return AF.resample(wav, orig_rate, new_rate)


def resampled_length(samples: int, rate: int) -> int:
    """Samples that ``samples`` at ``rate`` Hz become at 16 kHz (torchaudio's resampler)."""
    return -(-samples * SAMPLE_RATE // rate)


def to_samples(seconds: Decimal | str, rate: int) -> int:
    """The sample a time falls on: ``seconds x rate`` rounded half up, computed exactly in
    decimal (``"0.00003125"`` s at 16 kHz is sample 1, not 0 as binary floats would give)."""
    return int((Decimal(seconds) * rate).to_integral_value(rounding=ROUND_HALF_UP))


@contextmanager
def open_audio(source: Path | BinaryIO, where: str | Path) -> Iterator[sf.SoundFile]:
    """``source`` (a path, or bytes in a file-like object) open for reading.

    Raises:
        AudioError: naming ``where``: the file is missing or cannot be decoded.
    """
    if isinstance(source, Path) and not source.is_file():
        raise AudioError(f"{where}: audio file not found")
    try:
        f = sf.SoundFile(str(source) if isinstance(source, Path) else source)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{where}: cannot decode audio ({single_line(err)})") from err
    with f:
        yield f


def read_frames(f: sf.SoundFile, where: str | Path, start: int = 0, frames: int = -1) -> np.ndarray:
    """Samples ``[start, start + frames)`` of an open file (to its end for ``frames = -1``),
    float32 ``(samples, channels)``, found by seeking (nothing before ``start`` is decoded).

    Raises:
        AudioError: naming ``where``: no samples, NaN/Inf, fewer samples than asked for.
    """
    try:
        if start:
            f.seek(start)
        data = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{where}: cannot decode audio ({single_line(err)})") from err
    if data.shape[0] == 0:
        raise AudioError(f"{where}: audio is empty (0 samples)")
    if 0 <= frames != data.shape[0]:
        raise AudioError(
            f"{where}: {data.shape[0]} samples from sample {start}, where {frames} were listed; "
            "the audio changed since `pipeline prepare` (run it again)"
        )
    if not np.isfinite(data).all():
        raise AudioError(f"{where}: audio contains NaN or Inf samples")
    return data


def check_audio(path: str | Path) -> tuple[int, int]:
    """Decode ``path`` fully and return ``(samples, sample_rate)`` as stored in the file.

    Raises:
        AudioError: the file is missing, unreadable, has no samples, or holds NaN/Inf.
    """
    with open_audio(Path(path), path) as f:
        return read_frames(f, path).shape[0], f.samplerate


def read_range(
    source: Path | BinaryIO, where: str | Path, start: int = 0, frames: int = -1
) -> torch.Tensor:
    """Samples ``[start, start + frames)`` of ``source`` (at its own rate; the whole file for
    ``0, -1``) as a mono float32 waveform at 16 kHz, shape ``(samples,)``: exactly what reading
    a file that holds only those samples gives. Channels are averaged; any rate is resampled.

    Raises:
        AudioError: naming ``where``: missing, unreadable, empty, NaN/Inf or short audio.
    """
    with open_audio(source, where) as f:
        data, rate = read_frames(f, where, start, frames), f.samplerate
    return resample(torch.from_numpy(data.mean(axis=1)), rate).contiguous()


def read_audio(path: str | Path) -> torch.Tensor:
    """Read the file ``path`` as a mono float32 waveform at 16 kHz, shape ``(samples,)``.

    Raises:
        AudioError: the file is missing, unreadable, has no samples, or holds NaN/Inf.
    """
    return read_range(Path(path), path)


def write_audio(path: str | Path, wav: torch.Tensor | np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write mono audio as 16-bit FLAC (or by the file's extension), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    data = wav.numpy() if isinstance(wav, torch.Tensor) else wav
    sf.write(str(tmp), np.clip(data, -1.0, 1.0), rate, subtype="PCM_16", format=_format(path))
    tmp.replace(path)


def _format(path: Path) -> str:
    fmt = path.suffix.lstrip(".").upper()
    if fmt not in sf.available_formats():
        raise AudioError(f"{path}: unsupported audio extension {path.suffix!r}")
    return fmt


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


@ADDRESSES.register
@dataclass(frozen=True)
class AudioFile(Address):
    """Every sample of the audio file ``path``, identified by the file's sha256."""

    name = "file"
    whole = True
    path: Path

    def locate(self) -> Located:
        with open_audio(self.path, self.path) as f:
            samples, rate = read_frames(f, self.path).shape[0], f.samplerate
        return Located(self, samples, rate, sha256_file(self.path))

    def read(self, samples: int) -> torch.Tensor:
        return read_range(self.path, self.path, 0, samples)


@ADDRESSES.register
@dataclass(frozen=True)
class FileRange(Address):
    """Samples ``[start, start + n)`` of the longer recording ``path`` (a Kaldi segment, a
    Lhotse supervision or cut), read by seeking. A source names them by a time range (``span``;
    none: from ``start`` to the end); :meth:`locate` makes its times samples (``time x rate``,
    rounded half up) and pins the address down to its first sample ``start``, which its
    manifest row holds (left out at 0).
    Identity: the sha256 of the decoded samples (float32 little-endian, channels interleaved,
    at the file's rate), so a range changes identity exactly when its samples do."""

    name = "range"
    keys = ("start",)
    path: Path
    start: int = 0
    span: Span | None = field(default=None, compare=False)

    def locate(self) -> Located:
        path = self.path
        with open_audio(path, path) as f:
            rate, total = f.samplerate, f.frames
            first, last = self.span.samples(rate, total) if self.span else (self.start, total)
            if last > total:
                raise AudioError(
                    f"{path}: the range ends at sample {last} ({last / rate:g} s), past the "
                    f"recording's end ({total} samples, {total / rate:g} s)"
                )
            if last <= first:
                raise AudioError(f"{path}: the range is empty (samples {first} to {last})")
            data = read_frames(f, path, first, last - first)
        digest = sha256_bytes(data.astype("<f4", copy=False).tobytes())
        return Located(FileRange(path, first), last - first, rate, digest)

    def read(self, samples: int) -> torch.Tensor:
        return read_range(self.path, self.path, self.start, samples)
