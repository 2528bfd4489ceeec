"""A stack of LSTM layers over padded batches, exact for every valid frame.

``pack_padded_sequence`` keeps padding out of a bidirectional LSTM, but its CPU backward is
several times slower than the fused padded kernel (measured 4.3x on a 2 x 128 BiLSTM). Padding
only ever follows the valid frames, so the forward direction can run on the padded batch as
is; the backward direction runs on each sequence reversed *within its length*, which puts the
padding after the valid frames again. Every valid frame then gets exactly what it gets alone.
"""

from __future__ import annotations

import torch
from torch import nn


def reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``x (B, T, D)`` with each sequence's first ``lengths[b]`` frames reversed; padding stays."""
    steps = torch.arange(x.shape[1], device=x.device)[None, :]
    n = lengths.to(x.device)[:, None]
    index = torch.where(steps < n, n - 1 - steps, steps)
    return x.gather(1, index[..., None].expand_as(x))


class LSTMStack(nn.Module):
    """``layers`` LSTM layers of ``hidden`` units per direction.

    Args:
        input_size: D, the input width.
        bidirectional: a backward direction too (output ``2 * hidden`` wide); else causal.
        dropout: dropout between layers.
    """

    def __init__(
        self, input_size: int, hidden: int, layers: int, bidirectional: bool, dropout: float = 0.0
    ) -> None:
        super().__init__()
        width = hidden * (2 if bidirectional else 1)
        sizes = [input_size] + [width] * (layers - 1)
        self.forward_lstms = nn.ModuleList(nn.LSTM(s, hidden, batch_first=True) for s in sizes)
        self.backward_lstms = (
            nn.ModuleList(nn.LSTM(s, hidden, batch_first=True) for s in sizes)
            if bidirectional
            else None
        )
        self.dropout = nn.Dropout(dropout)
        self.output_size = width

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """``x (B, T, D)`` zero-padded, ``lengths (B,)`` -> each layer's output ``(B, T, W)``
        (zero on padded frames)."""
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
        outputs = []
        for i, forward in enumerate(self.forward_lstms):
            if i:
                x = self.dropout(x)
            out = forward(x)[0]
            if self.backward_lstms is not None:
                back = self.backward_lstms[i](reverse_within(x, lengths))[0]
                out = torch.cat([out, reverse_within(back, lengths)], dim=-1)
            x = out * valid[..., None]
            outputs.append(x)
        return outputs

    def stream(
        self, x: torch.Tensor, states: list | None = None
    ) -> tuple[list[torch.Tensor], list]:
        """A causal stack continued over the next frames ``x (B, T, D)`` from ``states``
        (None: the start); returns each layer's output and the states to go on from."""
        if self.backward_lstms is not None:
            raise ValueError("a bidirectional LSTM needs the whole utterance; it cannot stream")
        states = states or [None] * len(self.forward_lstms)
        outputs, carried = [], []
        for i, lstm in enumerate(self.forward_lstms):
            x, state = lstm(self.dropout(x) if i else x, states[i])
            outputs.append(x)
            carried.append(state)
        return outputs, carried
