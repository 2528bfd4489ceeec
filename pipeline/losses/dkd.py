"""Decoupled knowledge distillation (Zhao et al., CVPR 2022) on per-frame cluster logits.

With target class t: ``TCKD = KL(b_T || b_S)`` on the binary split ``b = [p_t, 1 - p_t]``,
``NCKD = KL(p̂_T || p̂_S)`` on the distribution over non-target classes renormalised, and
``KD = TCKD + (1 - p_t^T) * NCKD``. ``DKD = (alpha * TCKD + beta * NCKD) * tau^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.core.config import non_negative, positive
from pipeline.losses.base import LOSSES, masked_mean


def _parts(logits: torch.Tensor, target_mask: torch.Tensor):
    """Log-probabilities of the binary split and of the non-target distribution.

    Returns ``(log_b (…, 2), log_p_hat (…, C))``; ``log_p_hat`` is finite but meaningless at t.
    """
    lse_all = torch.logsumexp(logits, dim=-1)
    others = logits.masked_fill(target_mask, torch.finfo(logits.dtype).min)
    lse_others = torch.logsumexp(others, dim=-1)
    log_p_target = (logits * target_mask).sum(-1) - lse_all
    log_b = torch.stack([log_p_target, lse_others - lse_all], dim=-1)
    log_p_hat = others - lse_others[..., None]
    return log_b, log_p_hat


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    frame_mask: torch.Tensor,
    *,
    alpha: float,
    beta: float,
    tau: float,
) -> dict[str, torch.Tensor]:
    """Frame-averaged DKD and its parts.

    Args:
        student_logits: ``(B, T, C)``.
        teacher_logits: ``(B, T, C)`` raw teacher logits.
        targets: ``(B, T)`` target class per frame.
        frame_mask: ``(B, T)`` True on valid frames.
        alpha: weight of TCKD.
        beta: weight of NCKD.
        tau: temperature; the tau^2 factor IS applied to ``dkd``, ``tckd`` and ``nckd``.

    Returns:
        ``{"dkd", "tckd", "nckd"}`` scalars.
    """
    safe_targets = targets.masked_fill(~frame_mask, 0).long()
    target_mask = F.one_hot(safe_targets, student_logits.shape[-1]).bool()
    log_b_s, log_hat_s = _parts(student_logits / tau, target_mask)
    log_b_t, log_hat_t = _parts(teacher_logits / tau, target_mask)
    tckd = F.kl_div(log_b_s, log_b_t, reduction="none", log_target=True).sum(-1)
    nckd_terms = F.kl_div(log_hat_s, log_hat_t, reduction="none", log_target=True)
    nckd = nckd_terms.masked_fill(target_mask, 0.0).sum(-1)
    scale = tau**2
    tckd = masked_mean(tckd, frame_mask) * scale
    nckd = masked_mean(nckd, frame_mask) * scale
    return {"dkd": alpha * tckd + beta * nckd, "tckd": tckd, "nckd": nckd}


@dataclass(frozen=True)
class DKDConfig:
    """Attributes: weight: factor in the total loss; alpha/beta: TCKD/NCKD weights; tau."""

    weight: float
    alpha: float
    beta: float
    tau: float

    def __post_init__(self) -> None:
        positive(self, "tau")
        non_negative(self, "weight", "alpha", "beta")


@LOSSES.register
class DKD:
    name = "dkd"
    config_type = DKDConfig
    distillation = True

    def __init__(self, cfg: DKDConfig) -> None:
        self.cfg = cfg

    def __call__(self, outputs, batch):
        c = self.cfg
        return dkd_loss(
            outputs["logits"],
            batch.teacher_logits,
            batch.targets,
            batch.frame_mask,
            alpha=c.alpha,
            beta=c.beta,
            tau=c.tau,
        )
