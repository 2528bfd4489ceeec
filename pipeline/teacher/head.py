"""HuBERT's cluster-prediction head: cosine similarity to label embeddings over a temperature."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClusterHead(nn.Module):
    """Logits over C clusters, as in fairseq's HubertModel.

    ``logits[c] = cos(final_proj(x), label_embs[c]) / logit_temp``.

    Args:
        hidden_size: D, the encoder output size.
        proj_dim: F, the size of the projection and of each label embedding.
        num_classes: C, the number of clusters (special dictionary rows already removed).
        logit_temp: the temperature (0.1 in HuBERT).
    """

    def __init__(
        self, hidden_size: int, proj_dim: int, num_classes: int, logit_temp: float
    ) -> None:
        super().__init__()
        self.final_proj = nn.Linear(hidden_size, proj_dim)
        self.label_embs = nn.Parameter(torch.empty(num_classes, proj_dim).normal_())
        self.logit_temp = logit_temp

    @property
    def num_classes(self) -> int:
        return self.label_embs.shape[0]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` encoder output -> ``(..., C)`` logits."""
        proj = F.normalize(self.final_proj(hidden), dim=-1)
        return proj @ F.normalize(self.label_embs, dim=-1).T / self.logit_temp
