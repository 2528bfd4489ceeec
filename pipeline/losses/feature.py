"""Feature distillation (DistilHuBERT): predict teacher hidden layers with L1 and cosine terms."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.core.config import non_negative
from pipeline.losses.base import LOSSES, masked_mean


def feature_loss(
    predicted: dict[str, torch.Tensor],
    teacher: dict[str, torch.Tensor],
    frame_mask: torch.Tensor,
    cos_weight: float,
) -> dict[str, torch.Tensor]:
    """Sum over layers of ``L1 - cos_weight * log sigmoid(cos)`` between predicted and teacher
    features, as DistilHuBERT trains its prediction heads.

    Args:
        predicted: layer name -> ``(B, T, D)`` student predictions.
        teacher: layer name -> ``(B, T, D)`` teacher features (every predicted name present).
        frame_mask: ``(B, T)`` True on valid frames.

    Returns:
        ``{"feature": total, "l1": summed L1 terms, "cos": mean cosine similarity}``.
    """
    missing = sorted(set(predicted) - set(teacher))
    if missing:
        raise KeyError(
            f"the cache holds no teacher features {missing}: add them to cache_teacher.features"
        )
    l1 = cos_term = cos_mean = frame_mask.new_zeros((), dtype=torch.float32)
    for name, pred in predicted.items():
        target = teacher[name]
        l1 = l1 + masked_mean((pred - target).abs().mean(-1), frame_mask)
        cos = F.cosine_similarity(pred, target, dim=-1)
        cos_term = cos_term + masked_mean(-F.logsigmoid(cos), frame_mask)
        cos_mean = cos_mean + masked_mean(cos, frame_mask) / len(predicted)
    return {"feature": l1 + cos_weight * cos_term, "l1": l1, "cos": cos_mean}


@dataclass(frozen=True)
class FeatureConfig:
    """Attributes: weight: factor in the total loss; cos_weight: the cosine term's weight
    (DistilHuBERT: 1)."""

    weight: float
    cos_weight: float

    def __post_init__(self) -> None:
        non_negative(self, "weight", "cos_weight")


@LOSSES.register
class Feature:
    name = "feature"
    config_type = FeatureConfig
    distillation = True

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg

    def __call__(self, outputs, batch):
        predicted = outputs.get("features")
        if not predicted:
            raise ValueError("the feature loss needs a student that predicts teacher layers")
        return feature_loss(predicted, batch.features, batch.frame_mask, self.cfg.cos_weight)
