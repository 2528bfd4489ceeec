"""Cross-entropy of the student's logits on the frame's cluster target."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.core.config import non_negative
from pipeline.losses.base import LOSSES, masked_mean


def ce_loss(
    student_logits: torch.Tensor, targets: torch.Tensor, frame_mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Frame-averaged cross-entropy.

    Args:
        student_logits: ``(B, T, C)``.
        targets: ``(B, T)`` class ids (any value on padded frames).
        frame_mask: ``(B, T)`` True on valid frames.

    Returns:
        ``{"ce": scalar}``; no temperature is applied.
    """
    safe_targets = targets.masked_fill(~frame_mask, 0).long()
    per_frame = F.cross_entropy(student_logits.transpose(1, 2), safe_targets, reduction="none")
    return {"ce": masked_mean(per_frame, frame_mask)}


@dataclass(frozen=True)
class CEConfig:
    """Attributes: weight: factor of this term in the total loss."""

    weight: float

    def __post_init__(self) -> None:
        non_negative(self, "weight")


@LOSSES.register
class CE:
    name = "ce"
    config_type = CEConfig
    distillation = False

    def __init__(self, cfg: CEConfig) -> None:
        self.cfg = cfg

    def __call__(self, outputs, batch):
        return ce_loss(outputs["logits"], batch.targets, batch.frame_mask)
