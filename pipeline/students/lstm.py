"""The paper's student: HuBERT-style conv front end, bidirectional LSTMs, a linear head to C.

Shapes: wav ``(B, S)`` at 16 kHz -> conv ``(B, T, conv_dim)`` -> proj ``(B, T, proj_dim)``
-> ``lstm_layers`` x BiLSTM ``(B, T, 2 * lstm_hidden)`` -> head ``(B, T, C)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import HubertConfig
from transformers.models.hubert.modeling_hubert import HubertFeatureEncoder

from pipeline.frames import FrameSpec
from pipeline.students.base import STUDENTS


@dataclass(frozen=True)
class LSTMStudentConfig:
    """Attributes:
    conv_dim: channels of every conv layer (HuBERT: 512). Kernels and strides come from the
        teacher's frame stack, so student frames align with the cached logits.
    proj_dim: size of the projection after the conv front end.
    lstm_layers: number of bidirectional LSTM layers (paper: 4).
    lstm_hidden: hidden size per direction (paper: 384).
    dropout: dropout between LSTM layers.
    """

    conv_dim: int
    proj_dim: int
    lstm_layers: int
    lstm_hidden: int
    dropout: float


@STUDENTS.register
class LSTMStudent(nn.Module):
    name = "lstm"
    config_type = LSTMStudentConfig

    def __init__(self, cfg: LSTMStudentConfig, *, num_classes: int, frames: FrameSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.frames = frames
        conv_cfg = HubertConfig(
            conv_dim=(cfg.conv_dim,) * len(frames.kernels),
            conv_kernel=frames.kernels,
            conv_stride=frames.strides,
            feat_extract_norm="layer",  # per-frame norm: padding cannot leak into valid frames
            conv_bias=True,
        )
        self.frontend = HubertFeatureEncoder(conv_cfg)
        self.proj = nn.Sequential(nn.LayerNorm(cfg.conv_dim), nn.Linear(cfg.conv_dim, cfg.proj_dim))
        sizes = [cfg.proj_dim] + [2 * cfg.lstm_hidden] * (cfg.lstm_layers - 1)
        self.lstms = nn.ModuleList(
            nn.LSTM(size, cfg.lstm_hidden, batch_first=True, bidirectional=True) for size in sizes
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * cfg.lstm_hidden, num_classes)

    def extract_features(
        self, wav: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Layer outputs for downstream use: ``[proj, lstm_1, ..., lstm_N]``, each ``(B, T, *)``,
        zero on padded frames, and the frame lengths ``(B,)``."""
        frame_lengths = self.frames.num_frames(lengths)
        x = self.proj(self.frontend(wav).transpose(1, 2))
        layers = [x]
        for i, lstm in enumerate(self.lstms):
            packed = pack_padded_sequence(
                self.dropout(x) if i else x,
                frame_lengths.cpu(),
                batch_first=True,
                enforce_sorted=False,
            )
            x, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.shape[1])
            layers.append(x)
        return layers, frame_lengths

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav (B, S)``, ``lengths (B,)`` in samples -> ``logits (B, T, C)``, frame lengths."""
        layers, frame_lengths = self.extract_features(wav, lengths)
        return self.head(layers[-1]), frame_lengths
