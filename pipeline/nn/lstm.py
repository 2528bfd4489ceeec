"""The paper's student: HuBERT-style conv front end, bidirectional LSTMs, a linear head to C.

Shapes: wav ``(B, S)`` at 16 kHz -> conv ``(B, T, conv_dim)`` -> proj ``(B, T, proj_dim)``
-> ``lstm_layers`` x BiLSTM ``(B, T, 2 * lstm_hidden)`` -> head ``(B, T, C)``; with
``bidirectional: false``, LSTMs ``(B, T, lstm_hidden)`` that see only the past.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .frames import FrameSpec
from .frontends import StudentFrontend, check_frontend_choice
from .recurrent import LSTMStack


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
    lstm_layers: number of LSTM layers (paper: 4).
    lstm_hidden: hidden size per direction (paper: 384).
    bidirectional: both directions (the paper); ``false`` makes a causal student that runs on a
        live stream, chunk by chunk (``pipeline.export.streaming``), given a causal front end.
    dropout: dropout between LSTM layers.
    frontend: ``conv`` (a trainable conv stack, initialised by ``frontend_init``); ``cached``
        (the teacher's conv stack, frozen: training reads its output from the cache, which
        must hold the ``conv`` feature, and the exported student runs it on raw audio);
        ``fbank`` (80 log-mel bins every 10 ms and two small convs, one of stride 2, so frames
        align with the teacher's 50 Hz frames; light at inference).
    """

    conv_dim: int
    proj_dim: int
    lstm_layers: int
    lstm_hidden: int
    dropout: float
    frontend_init: str
    frontend: str = "conv"
    bidirectional: bool = True

    def __post_init__(self) -> None:
        check_frontend_choice(self.frontend, self.frontend_init)
        if min(self.conv_dim, self.proj_dim, self.lstm_layers, self.lstm_hidden) < 1:
            raise ValueError("conv_dim, proj_dim, lstm_layers and lstm_hidden must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


class LSTMStudent(nn.Module):
    name = "lstm"
    config_type = LSTMStudentConfig
    predicts_logits = True

    def __init__(
        self,
        cfg: LSTMStudentConfig,
        *,
        num_classes: int,
        frames: FrameSpec,
        teacher_frontend: tuple[dict, dict] | None = None,
        frontend: dict | None = None,
        feature_dims: dict[str, int] | None = None,
    ) -> None:
        """``teacher_frontend``: ``(spec, weights)`` of the teacher's conv stack, used when
        ``cfg.frontend_init`` is ``teacher`` or ``cfg.frontend`` is ``cached``; ``frontend``:
        a spec to rebuild (checkpoints); ``feature_dims``: unused (no feature targets)."""
        super().__init__()
        self.cfg = cfg
        self.frames = frames
        self.num_classes = num_classes
        self.feature_dims: dict[str, int] = {}
        self.frontend = StudentFrontend(cfg.frontend, cfg.conv_dim, cfg.frontend_init, frames,
                                        teacher_frontend, frontend)  # fmt: skip
        width = self.frontend.width
        self.proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, cfg.proj_dim))
        self.lstms = LSTMStack(cfg.proj_dim, cfg.lstm_hidden, cfg.lstm_layers,
                               bidirectional=cfg.bidirectional, dropout=cfg.dropout)  # fmt: skip
        self.head = nn.Linear(self.lstms.output_size, num_classes)

    @property
    def frontend_spec(self) -> dict:
        return self.frontend.spec

    def train_outputs(self, batch) -> dict[str, torch.Tensor]:
        """Training forward on a cache batch (``pipeline.training.batches.Batch``):
        ``{"logits": (B, T, C)}``. With ``frontend: cached`` the conv stack's output comes from
        the cache, not the audio."""
        frame_lengths = self.frames.num_frames(batch.lengths)
        front = self.frontend.train_features(batch)
        return {"logits": self.head(self._encode(front, frame_lengths)[-1])}

    def extract_features(
        self, wav: torch.Tensor, lengths: torch.Tensor, front: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Layer outputs for downstream use: ``[proj, lstm_1, ..., lstm_N]``, each ``(B, T, *)``,
        zero on padded frames, and the frame lengths ``(B,)``. ``front``: the front end's output
        on this audio, when the caller has it already (a frozen front end shared by models)."""
        frame_lengths = self.frames.num_frames(lengths)
        front = self.frontend(wav, lengths) if front is None else front
        return self._encode(front, frame_lengths), frame_lengths

    def _encode(self, front: torch.Tensor, frame_lengths: torch.Tensor) -> list[torch.Tensor]:
        """Front-end features -> ``[proj, lstm_1, ..., lstm_N]``."""
        x = self.proj(front)
        return [x, *self.lstms(x, frame_lengths)]

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor, front: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav (B, S)``, ``lengths (B,)`` in samples -> ``logits (B, T, C)``, frame lengths.
        ``front``: as in :meth:`extract_features`."""
        layers, frame_lengths = self.extract_features(wav, lengths, front)
        return self.head(layers[-1]), frame_lengths
