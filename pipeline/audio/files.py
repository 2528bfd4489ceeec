"""Audio input: read any soundfile-readable file as 16 kHz mono float32, or fail naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from pipeline.core.errors import AudioError
from pipeline.nn.frames import SAMPLE_RATE


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Resample the last axis of ``wav`` with torchaudio's windowed-sinc resampler."""
    if orig_rate == new_rate:
        return wav
    return AF.resample(wav, orig_rate, new_rate)


def resampled_length(samples: int, rate: int) -> int:
    """Samples that ``samples`` at ``rate`` Hz become at 16 kHz (torchaudio's resampler)."""
    return -(-samples * SAMPLE_RATE // rate)


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode ``path`` to float32 ``(samples, channels)`` and its rate, or raise AudioError."""
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err})") from err
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio contains NaN or Inf samples")
    return data, rate


def check_audio(path: str | Path) -> tuple[int, int]:
    """Decode ``path`` fully and return ``(samples, sample_rate)`` as stored in the file.

    Raises:
        AudioError: the file is missing, unreadable, has no samples, or holds NaN/Inf.
    """
    data, rate = _decode(Path(path))
    return data.shape[0], rate


def read_audio(path: str | Path) -> torch.Tensor:
    """Read ``path`` as a mono float32 waveform at 16 kHz, shape ``(samples,)``.

    Multi-channel audio is averaged to mono; any sample rate is resampled.

    Raises:
        AudioError: the file is missing, unreadable, has no samples, or holds NaN/Inf.
    """
    data, rate = _decode(Path(path))
    return resample(torch.from_numpy(data.mean(axis=1)), rate).contiguous()


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
