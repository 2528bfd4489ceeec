"""The hidden states a downstream model weighs, as SUPERB does: the layers as wide as the last
(a learnt weighted sum needs one width)."""

from __future__ import annotations

import torch


def same_width(layers: list[torch.Tensor]) -> list[torch.Tensor]:
    """The ``(B, T, D)`` layers whose width ``D`` is the last layer's."""
    width = layers[-1].shape[-1]
    return [x for x in layers if x.shape[-1] == width]
