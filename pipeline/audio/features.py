"""Classic speech features aligned with HuBERT's frames: log-mel filterbanks (the fbank
baseline and front end) and MFCC + deltas (the first-iteration pre-training targets), with
per-utterance mean/variance normalisation."""

from __future__ import annotations

import math

import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF
from torch import nn

from pipeline.audio.files import SAMPLE_RATE
from pipeline.audio.frames import lengths_to_mask, masked_mean_var

FEATURE_DESCRIPTION = "kaldi mfcc 13 + delta + delta-delta, 25 ms window, 20 ms hop, per-utt CMVN"


def mfcc_features(wav: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(samples,)`` 16 kHz audio -> ``(num_frames, 39)`` MFCC with deltas.

    A 25 ms window every 20 ms without edge padding puts frame ``i`` on samples
    ``[320 i, 320 i + 400)``: the receptive field of HuBERT's conv stack, so frame ``i`` here is
    frame ``i`` of the model. ``num_frames`` (the model's count) trims the at most one extra
    frame the two roundings can differ by. Each utterance is mean/variance normalised.
    """
    mfcc = kaldi.mfcc(
        wav[None].float() * 32768,  # Kaldi's int16 scale
        sample_frequency=SAMPLE_RATE,
        frame_length=25.0,
        frame_shift=20.0,
        num_ceps=13,
        dither=0.0,
        snip_edges=True,
    )
    if abs(mfcc.shape[0] - num_frames) > 1:
        raise ValueError(f"MFCC gives {mfcc.shape[0]} frames where the model has {num_frames}")
    if mfcc.shape[0] < num_frames:
        mfcc = torch.cat([mfcc, mfcc[-1:]])
    mfcc = mfcc[:num_frames].T  # (13, T)
    delta = AF.compute_deltas(mfcc)
    feats = torch.cat([mfcc, delta, AF.compute_deltas(delta)]).T
    return cmvn(feats)


def cmvn(feats: torch.Tensor) -> torch.Tensor:
    """Per-utterance mean/variance normalisation of ``(T, D)`` features."""
    return (feats - feats.mean(0)) / (feats.std(0, correction=0) + 1e-5)


class LogMel(nn.Module):
    """Kaldi's log-mel filterbank (``compliance.kaldi.fbank``: 25 ms povey windows without
    edge padding, DC offset removed, pre-emphasis 0.97, 512-point power spectrum, ``bins`` mel
    bins from 20 Hz, log floored at float32's epsilon) for a padded batch, in one strided
    convolution and two matrix products: every step up to the spectrum is linear in a window's
    samples, so it folds into the convolution's kernel. The same numbers as Kaldi's (tested),
    and exportable to ONNX and TorchScript.

    Args:
        bins: mel bins.
        shift_ms: window shift (window ``i`` starts at sample ``16 * shift_ms * i``).
    """

    WINDOW, FFT = 400, 512

    def __init__(self, bins: int, shift_ms: float) -> None:
        import torchaudio.compliance.kaldi as kaldi

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
        self.register_buffer("kernel", (frame.T @ dft).T[:, None, :].float(), persistent=False)
        banks, _ = kaldi.get_mel_banks(bins, self.FFT, float(SAMPLE_RATE), 20.0, 0.0, 100.0,
                                       -500.0, 1.0)  # fmt: skip
        self.register_buffer("mel", nn.functional.pad(banks, (0, 1)).float(), persistent=False)

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
