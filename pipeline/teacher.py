"""The teacher: a HuBERT encoder plus its cluster head, run with exact batching.

Only the offline ``random`` source exists so far: a small, seeded, *untrained* HuBERT, named
as such everywhere it appears. Checkpoint sources (Hugging Face, fairseq) plug in here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn
from transformers import HubertConfig, HubertModel

from pipeline.frames import FrameSpec
from pipeline.head import ClusterHead

TEACHER_SOURCES = ("random",)


@dataclass(frozen=True)
class RandomTeacherConfig:
    """Size of the seeded random HuBERT (layer-norm conv stack, pre-LN Transformer)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    conv_dim: int
    proj_dim: int


@dataclass(frozen=True)
class TeacherConfig:
    """Attributes:
    source: ``random``: a seeded, untrained HuBERT of the size in ``random`` (a placeholder
        until a trained teacher is configured; its logits carry no speech knowledge).
    seed: seed for the random weights.
    num_classes: C, clusters predicted per frame.
    logit_temp: the head's cosine temperature (0.1 in HuBERT).
    random: size of the random teacher.
    """

    source: str
    seed: int
    num_classes: int
    logit_temp: float
    random: RandomTeacherConfig

    def __post_init__(self) -> None:
        if self.source not in TEACHER_SOURCES:
            raise ValueError(
                f"teacher source {self.source!r} unknown; available: {TEACHER_SOURCES}"
            )


class Teacher(nn.Module):
    """HuBERT encoder + cluster head, in eval mode.

    Attributes:
        description: human-readable provenance (goes into the cache header).
        frames: the conv stack's frame arithmetic.
    """

    def __init__(self, encoder: HubertModel, head: ClusterHead, description: str) -> None:
        super().__init__()
        self.encoder = encoder.eval()
        self.head = head.eval()
        self.description = description
        cfg = encoder.config
        self.frames = FrameSpec(tuple(cfg.conv_kernel), tuple(cfg.conv_stride))
        # A group-norm conv stack normalises over time, so padding would change the result.
        self.batchable = cfg.feat_extract_norm == "layer"

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @torch.inference_mode()
    def logits(self, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-utterance logits ``(frames_i, C)`` for 16 kHz waveforms ``(samples_i,)``.

        Batched inference gives each utterance the logits it gets alone: layer-norm stacks get
        an attention mask over zero padding; group-norm stacks run one utterance at a time.
        """
        if not self.batchable:
            return [self._forward(w[None], None)[0] for w in wavs]
        lengths = torch.tensor([len(w) for w in wavs])
        batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        mask = torch.arange(batch.shape[1])[None, :] < lengths[:, None]
        out = self._forward(batch, mask.long())
        return [out[i, : self.frames.num_frames(int(n))] for i, n in enumerate(lengths)]

    def _forward(self, wav: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        hidden = self.encoder(wav, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden)

    def fingerprint(self) -> str:
        """sha256 over every weight of encoder and head (names, shapes, dtypes, bytes)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        digest.update(f"logit_temp={self.head.logit_temp}".encode())
        return digest.hexdigest()


def build_teacher(cfg: TeacherConfig) -> Teacher:
    """Build the configured teacher (only ``random`` so far)."""
    r = cfg.random
    torch.manual_seed(cfg.seed)
    hubert_cfg = HubertConfig(
        hidden_size=r.hidden_size,
        num_hidden_layers=r.num_layers,
        num_attention_heads=r.num_heads,
        intermediate_size=r.intermediate_size,
        conv_dim=(r.conv_dim,) * 7,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        mask_time_prob=0.0,
    )
    encoder = HubertModel(hubert_cfg)
    head = ClusterHead(r.hidden_size, r.proj_dim, cfg.num_classes, cfg.logit_temp)
    return Teacher(encoder, head, f"random HuBERT (untrained, seed {cfg.seed})")
