"""HuBERT's convolutional front end (the conv stack that turns 16 kHz audio into 50 Hz
frames), shared by the teacher and the students that start from it."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import HubertConfig
from transformers.models.hubert.modeling_hubert import HubertFeatureEncoder

log = logging.getLogger(__name__)


def frontend_spec(config: HubertConfig) -> dict[str, Any]:
    """The JSON description of a conv stack (what a student needs to rebuild it)."""
    return {
        "conv_dim": list(config.conv_dim),
        "conv_kernel": list(config.conv_kernel),
        "conv_stride": list(config.conv_stride),
        "norm": config.feat_extract_norm,
        "conv_bias": bool(config.conv_bias),
    }


def build_frontend(spec: dict[str, Any]) -> HubertFeatureEncoder:
    """A freshly initialised conv stack described by :func:`frontend_spec`."""
    return HubertFeatureEncoder(
        HubertConfig(
            conv_dim=tuple(spec["conv_dim"]),
            conv_kernel=tuple(spec["conv_kernel"]),
            conv_stride=tuple(spec["conv_stride"]),
            feat_extract_norm=spec["norm"],
            conv_bias=spec["conv_bias"],
        )
    )


def normalize_waveforms(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Layer-normalise each utterance over its valid samples (HuBERT Large's input); padding
    stays zero."""
    out = torch.zeros_like(wav)
    for i, n in enumerate(lengths.tolist()):
        out[i, :n] = torch.nn.functional.layer_norm(wav[i, :n], (n,))
    return out


def conv_features(
    frontend: nn.Module, wav: torch.Tensor, lengths: torch.Tensor, per_utterance: bool
) -> torch.Tensor:
    """``wav (B, S)`` zero-padded -> ``(B, T, C)`` conv features.

    A layer-norm stack normalises each frame alone, so the padded batch runs at once and valid
    frames never see the padding. A group-norm stack normalises over time, so with
    ``per_utterance`` each utterance runs unpadded, as it would alone, and results are padded.
    """
    if not per_utterance:
        return frontend(wav).transpose(1, 2)
    return pad_sequence(
        [frontend(wav[i : i + 1, :n])[0].T for i, n in enumerate(lengths.tolist())],
        batch_first=True,
    )
