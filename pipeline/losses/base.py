"""Shared pieces of the losses: the registry and the masked frame average."""

from __future__ import annotations

import torch

from pipeline.core.registry import Registry

LOSSES: Registry = Registry("loss")


def masked_mean(values: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values (B, T)`` over frames where ``frame_mask (B, T)`` is True.

    Padded positions are excluded with ``torch.where`` (so NaN/Inf there cannot leak), and the
    normaliser is the explicit count of valid frames.
    """
    total = torch.where(frame_mask, values, torch.zeros_like(values)).sum()
    return total / frame_mask.sum().clamp(min=1)
