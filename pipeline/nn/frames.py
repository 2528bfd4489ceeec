"""Frame arithmetic shared by teacher and students: one conv stack, one frame count."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SAMPLE_RATE = 16_000  # Hz: every model here runs on 16 kHz audio


@dataclass(frozen=True)
class FrameSpec:
    """The strided conv stack that turns 16 kHz samples into frames (HuBERT: 320x, 50 Hz).

    Attributes:
        kernels: kernel size of each conv layer, in input steps.
        strides: stride of each conv layer.
    """

    kernels: tuple[int, ...]
    strides: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.kernels) != len(self.strides) or not self.kernels:
            raise ValueError("kernels and strides must be non-empty and of equal length")

    @property
    def hop(self) -> int:
        """Samples between consecutive frames."""
        hop = 1
        for s in self.strides:
            hop *= s
        return hop

    @property
    def receptive_field(self) -> int:
        """Samples one frame sees: the shortest input that gives a frame."""
        field = 1
        for k, s in reversed(list(zip(self.kernels, self.strides, strict=True))):
            field = (field - 1) * s + k
        return field

    def frame_rate(self, sample_rate: int) -> float:
        return sample_rate / self.hop

    def num_frames(self, samples: int | torch.Tensor) -> int | torch.Tensor:
        """Frames a valid (unpadded) input of ``samples`` produces: ``floor((n - k) / s) + 1``
        per layer, clamped at 0 for inputs shorter than the receptive field."""
        n = samples
        for k, s in zip(self.kernels, self.strides, strict=True):
            n = (n - k) // s + 1
            n = n.clamp(min=0) if isinstance(n, torch.Tensor) else max(n, 0)
        return n


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, max_len)`` bool mask, True on valid positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean_var(x: torch.Tensor, valid: torch.Tensor, dim: int):
    """Mean and (biased) variance of ``x`` along ``dim`` over the positions where ``valid``
    (a mask broadcastable to ``x``) holds, keeping ``dim``; an empty row counts as one."""
    count = valid.sum(dim, keepdim=True).clamp(min=1)
    mean = (x * valid).sum(dim, keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum(dim, keepdim=True) / count
    return mean, var


# HuBERT's (and wav2vec 2.0's) conv stack: 320x downsampling, 50 frames/s at 16 kHz.
HUBERT_FRAMES = FrameSpec((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
