"""Post-norm Transformer encoder layers over padded batches, written on
``scaled_dot_product_attention`` so that one trace serves every batch size and length.

``nn.TransformerEncoderLayer`` computes the same thing (its parameter names are kept, so its
weights load here), but its attention bakes the traced batch and length into reshapes when
exported to ONNX, and its fused inference kernel has no ONNX form at all.

Shapes: x ``(B, T, D)``, ``valid (B, T)`` true on real frames -> ``(B, T, D)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter layout."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (y.reshape(b, t, self.heads, -1).transpose(1, 2) for y in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=valid[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Attention then a GELU feed-forward block, each residual and followed by layer norm
    (``nn.TransformerEncoderLayer(..., activation="gelu", batch_first=True)``)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.self_attn(x, valid)))
        ffn = self.linear2(self.drop(F.gelu(self.linear1(x))))
        return self.norm2(x + self.drop(ffn))


class Encoder(nn.Module):
    """``layers`` encoder layers; ``forward`` returns every layer's output."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn, dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for layer in self.layers:
            x = layer(x, valid) * valid[..., None]
            outputs.append(x)
        return outputs
