"""The paper's student: HuBERT-style conv front end, bidirectional LSTMs, a linear head to C.

Shapes: wav ``(B, S)`` at 16 kHz -> conv ``(B, T, conv_dim)`` -> proj ``(B, T, proj_dim)``
-> ``lstm_layers`` x BiLSTM ``(B, T, 2 * lstm_hidden)`` -> head ``(B, T, C)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.frames import FrameSpec
from pipeline.frontend import build_frontend, conv_features, normalize_waveforms
from pipeline.students.base import STUDENTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LSTMStudentConfig:
    """Attributes:
    conv_dim: channels of every conv layer (HuBERT: 512). Kernels and strides come from the
        teacher's frame stack, so student frames align with the cached logits.
    frontend_init: ``teacher``: copy the teacher's conv stack (its widths, norm and weights, as
        carried by the cache), as the paper and DistilHuBERT do; ``random``: a fresh layer-norm
        stack of ``conv_dim`` channels. ``teacher`` falls back to ``random``, with a warning,
        when the cache carries no conv stack.
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
    frontend_init: str

    def __post_init__(self) -> None:
        if self.frontend_init not in ("teacher", "random"):
            raise ValueError("frontend_init must be teacher or random")
        if min(self.conv_dim, self.proj_dim, self.lstm_layers, self.lstm_hidden) < 1:
            raise ValueError("conv_dim, proj_dim, lstm_layers and lstm_hidden must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


@STUDENTS.register
class LSTMStudent(nn.Module):
    name = "lstm"
    config_type = LSTMStudentConfig

    def __init__(
        self,
        cfg: LSTMStudentConfig,
        *,
        num_classes: int,
        frames: FrameSpec,
        teacher_frontend: tuple[dict, dict] | None = None,
        frontend: dict | None = None,
    ) -> None:
        """``teacher_frontend``: ``(spec, weights)`` of the teacher's conv stack, used when
        ``cfg.frontend_init`` is ``teacher``; ``frontend``: a spec to rebuild (checkpoints)."""
        super().__init__()
        self.cfg = cfg
        self.frames = frames
        from_teacher = cfg.frontend_init == "teacher" and frontend is None
        if from_teacher and teacher_frontend is None:
            log.warning("frontend_init: teacher, but the cache carries no conv stack: random init")
        default = {
            "conv_dim": [cfg.conv_dim] * len(frames.kernels),
            "conv_kernel": list(frames.kernels),
            "conv_stride": list(frames.strides),
            "norm": "layer",  # per-frame norm: padding cannot leak into valid frames
            "conv_bias": True,
        }
        spec = frontend or (teacher_frontend[0] if from_teacher and teacher_frontend else default)
        if (tuple(spec["conv_kernel"]), tuple(spec["conv_stride"])) != (
            frames.kernels,
            frames.strides,
        ):
            raise ValueError("the student's conv stack must have the cache's kernels and strides")
        self.frontend_spec = spec
        self.frontend = build_frontend(spec)
        if from_teacher and teacher_frontend is not None:
            self.frontend.load_state_dict(teacher_frontend[1])
        width = spec["conv_dim"][-1]
        self.proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, cfg.proj_dim))
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
        if self.frontend_spec.get("normalize", False):  # a teacher stack trained on normed audio
            wav = normalize_waveforms(wav, lengths)
        per_utterance = self.frontend_spec["norm"] == "group"
        x = self.proj(conv_features(self.frontend, wav, lengths, per_utterance))
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
