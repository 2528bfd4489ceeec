"""HuBERT's masked prediction: cross-entropy on the cluster targets of masked frames."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.core.config import non_negative
from pipeline.losses.base import LOSSES, masked_mean


def masked_prediction_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    frame_mask: torch.Tensor,
    *,
    unmasked_weight: float,
) -> dict[str, torch.Tensor]:
    """Mean cross-entropy over masked frames, plus ``unmasked_weight`` times that over the
    unmasked ones (fairseq's ``pred_nomask_weight``), and the accuracy on masked frames;
    padding never counts.

    Args:
        logits: ``(B, T, C)``.
        targets: ``(B, T)`` cluster ids (any value on padding).
        mask: ``(B, T)`` True on frames the model saw masked.
        frame_mask: ``(B, T)`` True on valid frames.

    Returns:
        ``{"masked": total, "accuracy": masked-frame accuracy}``; no temperature.
    """
    safe = targets.masked_fill(~frame_mask, 0).long()
    per_frame = F.cross_entropy(logits.transpose(1, 2), safe, reduction="none")
    on_masked = mask & frame_mask
    total = masked_mean(per_frame, on_masked)
    if unmasked_weight:
        total = total + unmasked_weight * masked_mean(per_frame, ~mask & frame_mask)
    hits = (logits.argmax(-1) == safe).float()
    return {"masked": total, "accuracy": masked_mean(hits, on_masked)}


@dataclass(frozen=True)
class MaskedConfig:
    """Attributes: weight: factor in the total loss; unmasked_weight: weight of the loss on
    unmasked frames (HuBERT Base: 0; above 0 it gives a short run an easier signal)."""

    weight: float
    unmasked_weight: float

    def __post_init__(self) -> None:
        non_negative(self, "weight", "unmasked_weight")


@LOSSES.register
class Masked:
    name = "masked"
    config_type = MaskedConfig
    distillation = False

    def __init__(self, cfg: MaskedConfig) -> None:
        self.cfg = cfg

    def __call__(self, outputs, batch):
        return masked_prediction_loss(
            outputs["logits"], batch.targets, outputs["mask"], batch.frame_mask,
            unmasked_weight=self.cfg.unmasked_weight,
        )  # fmt: skip
