"""The feature-distillation baseline, DistilHuBERT-style: a conv front end, a projection, a
convolutional position embedding, a few Transformer layers, and one linear head per teacher
layer it predicts (L1 + cosine, ``losses.feature``), all heads reading the last layer.

Shapes: wav ``(B, S)`` -> conv ``(B, T, conv)`` -> ``(B, T, hidden)`` -> ``layers`` x
Transformer -> heads ``{layer_i: (B, T, D_teacher)}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .frames import FrameSpec, lengths_to_mask
from .frontends import StudentFrontend, check_frontend_choice
from .transformer import Encoder


@dataclass(frozen=True)
class DistilHubertConfig:
    """Attributes:
    conv_dim: conv channels when the front end is not the teacher's.
    frontend_init: ``teacher`` (copy the cache's conv stack, as DistilHuBERT does) or ``random``.
    frontend: ``conv`` (trainable), ``cached`` (the teacher's, frozen, its output read from
        the cache) or ``fbank`` (see ``pipeline.nn.frontends``).
    hidden: Transformer width (DistilHuBERT: 768).
    layers: Transformer layers (DistilHuBERT: 2).
    heads: attention heads.
    ffn: feed-forward width.
    dropout: dropout in the Transformer.
    targets: teacher features predicted, by cache name (DistilHuBERT: layers 4, 8, 12); the
        cache must hold them (``cache_teacher.features``).
    """

    conv_dim: int
    frontend_init: str
    frontend: str
    hidden: int
    layers: int
    heads: int
    ffn: int
    dropout: float
    targets: list[str]

    def __post_init__(self) -> None:
        check_frontend_choice(self.frontend, self.frontend_init)
        if min(self.conv_dim, self.hidden, self.layers, self.heads, self.ffn) < 1:
            raise ValueError("conv_dim, hidden, layers, heads, ffn must be >= 1")
        if self.hidden % self.heads or not self.targets:
            raise ValueError("hidden must divide by heads, and targets name >= 1 layer")


class DistilHubertStudent(nn.Module):
    name = "distilhubert"
    config_type = DistilHubertConfig
    predicts_logits = False

    def __init__(
        self,
        cfg: DistilHubertConfig,
        *,
        num_classes: int,
        frames: FrameSpec,
        teacher_frontend: tuple[dict, dict] | None = None,
        frontend: dict | None = None,
        feature_dims: dict[str, int] | None = None,
    ) -> None:
        """``feature_dims``: the cache's feature widths (each target must be one)."""
        super().__init__()
        missing = [t for t in cfg.targets if t not in (feature_dims or {})]
        if missing:
            raise ValueError(
                f"distilhubert targets {missing} are not in the cache: add them to "
                "cache_teacher.features and rerun cache-teacher"
            )
        self.cfg = cfg
        self.frames = frames
        self.num_classes = num_classes
        self.feature_dims = {t: feature_dims[t] for t in cfg.targets}
        self.frontend = StudentFrontend(cfg.frontend, cfg.conv_dim, cfg.frontend_init, frames,
                                        teacher_frontend, frontend)  # fmt: skip
        width = self.frontend.width
        self.proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, cfg.hidden))
        self.pos_conv = nn.Sequential(
            nn.Conv1d(cfg.hidden, cfg.hidden, 31, padding=15, groups=16 if cfg.hidden % 16 == 0
                      else 1),
            nn.GELU(),
        )  # fmt: skip
        self.encoder = Encoder(cfg.hidden, cfg.heads, cfg.ffn, cfg.dropout, cfg.layers)
        self.heads = nn.ModuleDict(
            {t: nn.Linear(cfg.hidden, dim) for t, dim in self.feature_dims.items()}
        )

    @property
    def frontend_spec(self) -> dict:
        return self.frontend.spec

    def extract_features(
        self, wav: torch.Tensor, lengths: torch.Tensor, front: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Layer outputs ``[projection, layer 1, ..., layer N]``, each ``(B, T, hidden)``, and
        the frame lengths. ``front``: the front end's output on this audio, when the caller has
        it already (a frozen front end shared by models)."""
        front = self.frontend(wav, lengths) if front is None else front
        return self._encode(front, self.frames.num_frames(lengths))

    def _encode(self, front: torch.Tensor, frame_lengths: torch.Tensor):
        x = self.proj(front)
        valid = lengths_to_mask(frame_lengths, x.shape[1])
        x = x * valid[..., None]
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        return [x, *self.encoder(x, valid)], frame_lengths

    def train_outputs(self, batch) -> dict[str, dict[str, torch.Tensor]]:
        """``{"features": {target: (B, T, D)}}``: the teacher layers predicted from the last."""
        front = self.frontend.train_features(batch)
        layers, _ = self._encode(front, self.frames.num_frames(batch.lengths))
        return {"features": {t: head(layers[-1]) for t, head in self.heads.items()}}

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor):
        """``(predicted teacher features {target: (B, T, D)}, frame lengths)``."""
        layers, frame_lengths = self.extract_features(wav, lengths)
        return {t: head(layers[-1]) for t, head in self.heads.items()}, frame_lengths
