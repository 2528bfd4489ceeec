"""HuBERT's convolutional front end (the conv stack that turns 16 kHz audio into 50 Hz
frames), shared by the teacher and the students that start from it."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import HubertConfig
from transformers.models.hubert.modeling_hubert import HubertFeatureEncoder

from pipeline.audio.frames import lengths_to_mask

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
    stays zero. Batched: means and variances are taken over each row's valid samples."""
    valid = lengths_to_mask(lengths.to(wav.device), wav.shape[1])
    count = valid.sum(1, keepdim=True)
    mean = (wav * valid).sum(1, keepdim=True) / count
    var = (((wav - mean) * valid) ** 2).sum(1, keepdim=True) / count
    return (wav - mean) / torch.sqrt(var + 1e-5) * valid


def conv_features(frontend: nn.Module, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``wav (B, S)`` zero-padded -> ``(B, T, C)`` conv features, each utterance's valid frames
    exactly as it gets them alone, the whole batch in one pass.

    A layer-norm stack normalises each frame alone, so valid frames never see the padding. A
    group-norm stack (HuBERT Base) normalises its first layer's output over time: here over
    each utterance's valid frames only (a masked group norm, in fp32 as fairseq does), and no
    valid frame of a later (unnormalised, unpadded) conv layer reads a padded one.
    """
    first = frontend.conv_layers[0]
    norm = getattr(first, "layer_norm", None)
    if not isinstance(norm, nn.GroupNorm):
        return frontend(wav).transpose(1, 2)
    if norm.num_groups != norm.num_channels:
        raise ValueError("only per-channel group norm (HuBERT's) can be batched exactly")
    x = first.conv(wav[:, None])
    kernel, stride = first.conv.kernel_size[0], first.conv.stride[0]
    valid = lengths_to_mask((lengths.to(x.device) - kernel) // stride + 1, x.shape[-1])[:, None]
    x = x.float()
    count = valid.sum(-1, keepdim=True).clamp(min=1)
    mean = (x * valid).sum(-1, keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum(-1, keepdim=True) / count
    x = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight[:, None] + norm.bias[:, None]
    x = first.activation(x)
    for layer in frontend.conv_layers[1:]:
        x = layer(x)
    return x.transpose(1, 2)
