"""Kaldi's log-mel filterbank as a torch module (the fbank baseline and the fbank front end),
with per-utterance mean/variance normalisation of padded batches."""

from __future__ import annotations

import math

import torch
from torch import nn

from .frames import SAMPLE_RATE, lengths_to_mask, masked_mean_var


def mel_banks(bins: int, fft: int, low_hz: float = 20.0) -> torch.Tensor:
    """Kaldi's triangular mel filters ``(bins, fft / 2)`` over the power spectrum of ``fft``
    points at 16 kHz, equally spaced on Kaldi's mel scale (``1127 ln(1 + f / 700)``) from
    ``low_hz`` to the Nyquist frequency (torchaudio's ``get_mel_banks`` without VTLN warping).
    Pure torch, so a student with this front end runs where torchaudio is not installed."""

    def mel(hz):
        return 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)

    low, high = mel(low_hz), mel(SAMPLE_RATE / 2)
    step = (high - low) / (bins + 1)
    left = low + step * torch.arange(bins, dtype=torch.float64)[:, None]
    centre, right = left + step, left + 2 * step
    freqs = mel(SAMPLE_RATE / fft * torch.arange(fft // 2, dtype=torch.float64))[None]
    rise, fall = (freqs - left) / (centre - left), (right - freqs) / (right - centre)
    return torch.clamp(torch.minimum(rise, fall), min=0).float()


class LogMel(nn.Module):
    """Kaldi's log-mel filterbank (``compliance.kaldi.fbank``: 25 ms povey windows without
    edge padding, DC offset removed, pre-emphasis 0.97, 512-point power spectrum, ``bins`` mel
    bins from 20 Hz, log floored at float32's epsilon) for a padded batch, in one strided
    convolution and two matrix products: every step up to the spectrum is linear in a window's
    samples, so it folds into the convolution's kernel. The same numbers as Kaldi's (tested),
    and exportable to ONNX.

    Args:
        bins: mel bins.
        shift_ms: window shift (window ``i`` starts at sample ``16 * shift_ms * i``).
    """

    WINDOW, FFT = 400, 512

    def __init__(self, bins: int, shift_ms: float) -> None:
        super().__init__()
        self.hop = int(SAMPLE_RATE * shift_ms / 1000)
        n, k = self.WINDOW, torch.arange(self.FFT // 2 + 1, dtype=torch.float64)
        centre = torch.eye(n, dtype=torch.float64) - 1.0 / n  # DC offset removed
        emphasis = torch.eye(n, dtype=torch.float64) - 0.97 * torch.diag(
            torch.ones(n - 1, dtype=torch.float64), diagonal=-1
        )
        emphasis[0, 0] = 1 - 0.97  # Kaldi repeats the first sample
        window = torch.hann_window(n, periodic=False, dtype=torch.float64).pow(0.85)
        frame = window[:, None] * (emphasis @ centre)  # (n, n): samples -> windowed frame
        angle = 2 * math.pi * torch.arange(n, dtype=torch.float64)[:, None] * k[None] / self.FFT
        dft = torch.cat([angle.cos(), -angle.sin()], dim=1)  # (n, 2 * (FFT / 2 + 1))
        # constants, but kept with the weights: a model loaded the way transformers loads one
        # (built on the meta device) gets them from its file
        self.register_buffer("kernel", (frame.T @ dft).T[:, None, :].float())
        self.register_buffer("mel", nn.functional.pad(mel_banks(bins, self.FFT), (0, 1)))

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav (B, S)`` zero-padded in [-1, 1] -> ``(B, T, bins)`` log-mel (frames beyond an
        utterance's own are padding) and each one's frame count ``(B,)``."""
        spec = torch.nn.functional.conv1d(wav[:, None] * 32768, self.kernel, stride=self.hop)
        half = spec.shape[1] // 2
        power = spec[:, :half] ** 2 + spec[:, half:] ** 2
        mel = torch.matmul(self.mel, power).clamp(min=torch.finfo(torch.float32).eps).log()
        frames = torch.div(lengths - self.WINDOW, self.hop, rounding_mode="floor") + 1
        return mel.transpose(1, 2), frames.clamp(min=0)


def masked_cmvn(feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Per-utterance mean/variance normalisation of ``(B, T, D)`` over each one's first
    ``frames`` frames; the rest are zeroed."""
    valid = lengths_to_mask(frames.to(feats.device), feats.shape[1])[..., None]
    mean, var = masked_mean_var(feats, valid, 1)
    return (feats - mean) / (var.sqrt() + 1e-5) * valid
