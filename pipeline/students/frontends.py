"""Student front ends: the teacher's conv stack (trainable or frozen) and a light fbank one."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from pipeline.audio.features import log_mel
from pipeline.teacher.conv import build_frontend, conv_features, normalize_waveforms

log = logging.getLogger(__name__)


def student_conv_frontend(
    conv_dim: int,
    from_teacher: bool,
    frames,
    teacher_frontend: tuple[dict, dict] | None,
    saved: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A student's conv stack and its spec: rebuilt from a checkpoint's ``saved`` spec; else the
    teacher's (``from_teacher``, with its weights, when the cache carries ``teacher_frontend``
    ``(spec, weights)``; otherwise a warning and random init); else a fresh layer-norm stack of
    ``conv_dim`` channels with the ``frames`` kernels and strides.

    Raises:
        ValueError: a stack whose kernels and strides are not the cache's.
    """
    if saved is not None:
        return build_frontend(saved), saved
    if from_teacher and teacher_frontend is None:
        log.warning("frontend_init: teacher, but the cache carries no conv stack: random init")
        from_teacher = False
    spec = teacher_frontend[0] if from_teacher else {
        "conv_dim": [conv_dim] * len(frames.kernels),
        "conv_kernel": list(frames.kernels),
        "conv_stride": list(frames.strides),
        "norm": "layer",  # per-frame norm: padding cannot leak into valid frames
        "conv_bias": True,
    }  # fmt: skip
    if (tuple(spec["conv_kernel"]), tuple(spec["conv_stride"])) != (
        tuple(frames.kernels),
        tuple(frames.strides),
    ):
        raise ValueError("the student's conv stack must have the cache's kernels and strides")
    frontend = build_frontend(spec)
    if from_teacher:
        frontend.load_state_dict(teacher_frontend[1])
    return frontend, spec


def run_conv_frontend(
    frontend: nn.Module, spec: dict[str, Any], wav: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Raw zero-padded audio ``(B, S)`` -> ``(B, T, C)`` through a conv stack described by
    ``spec``: layer-normalised waveforms if it was trained on them, group-norm stacks per
    utterance (see :func:`conv_features`)."""
    if spec.get("normalize", False):
        wav = normalize_waveforms(wav, lengths)
    return conv_features(frontend, wav, lengths, per_utterance=spec["norm"] == "group")


class FbankFrontend(nn.Module):
    """A light front end: 80 Kaldi log-mel bins every 10 ms (25 ms window, per-utterance
    mean/variance normalised), a stride-2 conv and a stride-1 conv (kernel 3, GELU).

    With HuBERT's frame stack (a 400-sample receptive field every 320 samples) the output has
    exactly the teacher's frame count: frame ``i`` is centred on fbank frame ``2 i``, whose
    window starts at sample ``320 i``, as teacher frame ``i``'s does.
    """

    BINS = 80

    def __init__(self, dim: int, frames) -> None:
        super().__init__()
        if frames.hop != 320 or frames.receptive_field != 400:
            raise ValueError(
                "frontend: fbank aligns with HuBERT's frame stack (400-sample field, 320 hop) only"
            )
        self.frames = frames
        self.convs = nn.Sequential(
            nn.Conv1d(self.BINS, dim, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv1d(dim, dim, 3, padding=1),
            nn.GELU(),
        )

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``wav (B, S)`` zero-padded -> ``(B, T, dim)``; per utterance, as it would run alone."""
        out = []
        for i, n in enumerate(lengths.tolist()):
            feats = log_mel(wav[i, :n], self.BINS, shift_ms=10.0)
            out.append(self.convs(feats.T[None])[0].T)
        return pad_sequence(out, batch_first=True)
