"""The paper's student: HuBERT-style conv front end, bidirectional LSTMs, a linear head to C.

Shapes: wav ``(B, S)`` at 16 kHz -> conv ``(B, T, conv_dim)`` -> proj ``(B, T, proj_dim)``
-> ``lstm_layers`` x BiLSTM ``(B, T, 2 * lstm_hidden)`` -> head ``(B, T, C)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.audio.frames import FrameSpec
from pipeline.students.base import STUDENTS
from pipeline.students.frontends import FbankFrontend, run_conv_frontend, student_conv_frontend

FRONTENDS = ("conv", "cached", "fbank")


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

    def __post_init__(self) -> None:
        if self.frontend_init not in ("teacher", "random"):
            raise ValueError("frontend_init must be teacher or random")
        if self.frontend not in FRONTENDS:
            raise ValueError(f"frontend must be one of {FRONTENDS}")
        if min(self.conv_dim, self.proj_dim, self.lstm_layers, self.lstm_hidden) < 1:
            raise ValueError("conv_dim, proj_dim, lstm_layers and lstm_hidden must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


@STUDENTS.register
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
        if cfg.frontend == "fbank":
            self.frontend_spec = frontend or {"type": "fbank", "conv_dim": cfg.conv_dim}
            self.frontend = FbankFrontend(cfg.conv_dim, frames)
            width = cfg.conv_dim
        else:
            if cfg.frontend == "cached" and frontend is None and teacher_frontend is None:
                raise ValueError(
                    "frontend: cached needs the teacher's conv stack; the cache has none"
                )
            from_teacher = cfg.frontend == "cached" or cfg.frontend_init == "teacher"
            self.frontend, self.frontend_spec = student_conv_frontend(
                cfg.conv_dim, from_teacher, frames, teacher_frontend, frontend
            )
            width = self.frontend_spec["conv_dim"][-1]
        if cfg.frontend == "cached":
            self.frontend.requires_grad_(False)  # the teacher's, frozen; trained on its cache
        self.proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, cfg.proj_dim))
        sizes = [cfg.proj_dim] + [2 * cfg.lstm_hidden] * (cfg.lstm_layers - 1)
        self.lstms = nn.ModuleList(
            nn.LSTM(size, cfg.lstm_hidden, batch_first=True, bidirectional=True) for size in sizes
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * cfg.lstm_hidden, num_classes)

    def _front(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Raw audio -> front-end features ``(B, T, width)``."""
        if self.cfg.frontend == "fbank":
            return self.frontend(wav, lengths)
        return run_conv_frontend(self.frontend, self.frontend_spec, wav, lengths)

    def train_outputs(self, batch) -> dict[str, torch.Tensor]:
        """Training forward on a cache batch (``pipeline.training.batches.Batch``):
        ``{"logits": (B, T, C)}``. With ``frontend: cached`` the conv stack's output comes from
        the cache, not the audio."""
        frame_lengths = self.frames.num_frames(batch.lengths)
        if self.cfg.frontend == "cached":
            if "conv" not in batch.features:
                raise ValueError(
                    "frontend: cached needs the teacher's conv features in the cache: add conv "
                    "to cache_teacher.features and rerun cache-teacher"
                )
            front = batch.features["conv"]
        else:
            front = self._front(batch.wav, batch.lengths)
        return {"logits": self.head(self._encode(front, frame_lengths)[-1])}

    def extract_features(
        self, wav: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Layer outputs for downstream use: ``[proj, lstm_1, ..., lstm_N]``, each ``(B, T, *)``,
        zero on padded frames, and the frame lengths ``(B,)``."""
        frame_lengths = self.frames.num_frames(lengths)
        return self._encode(self._front(wav, lengths), frame_lengths), frame_lengths

    def _encode(self, front: torch.Tensor, frame_lengths: torch.Tensor) -> list[torch.Tensor]:
        """Front-end features -> ``[proj, lstm_1, ..., lstm_N]``."""
        x = self.proj(front)
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
        return layers

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav (B, S)``, ``lengths (B,)`` in samples -> ``logits (B, T, C)``, frame lengths."""
        layers, frame_lengths = self.extract_features(wav, lengths)
        return self.head(layers[-1]), frame_lengths
