"""Hinton knowledge distillation: KL(p_T || p_S) at temperature tau, times tau^2."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.core.config import non_negative, positive
from pipeline.losses.base import LOSSES, masked_mean


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    frame_mask: torch.Tensor,
    *,
    tau: float,
) -> dict[str, torch.Tensor]:
    """Frame-averaged ``KL(softmax(t / tau) || softmax(s / tau)) * tau^2``.

    Args:
        student_logits: ``(B, T, C)``.
        teacher_logits: ``(B, T, C)`` raw teacher logits (never softened).
        frame_mask: ``(B, T)`` True on valid frames.
        tau: temperature; the tau^2 factor IS applied.

    Returns:
        ``{"kd": scalar}``.
    """
    log_p_s = F.log_softmax(student_logits / tau, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / tau, dim=-1)
    per_frame = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(-1)
    return {"kd": masked_mean(per_frame, frame_mask) * tau**2}


@dataclass(frozen=True)
class KDConfig:
    """Attributes: weight: factor in the total loss; tau: softmax temperature."""

    weight: float
    tau: float

    def __post_init__(self) -> None:
        positive(self, "tau")
        non_negative(self, "weight")


@LOSSES.register
class KD:
    name = "kd"
    config_type = KDConfig
    distillation = True

    def __init__(self, cfg: KDConfig) -> None:
        self.cfg = cfg

    def __call__(self, outputs, batch):
        return kd_loss(outputs["logits"], batch.teacher_logits, batch.frame_mask, tau=self.cfg.tau)
