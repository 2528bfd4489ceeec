"""What an exported student computes: raw audio in, frames out, with nothing of training."""

from __future__ import annotations

import torch
from torch import nn


class Inference(nn.Module):
    """``(wav (B, S) zero-padded 16 kHz, lengths (B,))`` -> ``(outputs (B, T, D), frame
    lengths (B,))``: the cluster logits of a student that predicts them (``C`` wide), else its
    last hidden layer. A plain forward of tensors, so it exports to ONNX."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student.eval()
        self.logits = bool(getattr(student, "predicts_logits", False))

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor):
        if self.logits:
            return self.student(wav, lengths)
        layers, frame_lengths = self.student.extract_features(wav, lengths)
        return layers[-1], frame_lengths

    @property
    def output_name(self) -> str:
        return "logits" if self.logits else "last_hidden_state"
