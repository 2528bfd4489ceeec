"""HuBERT's convolutional front end (the conv stack that turns 16 kHz audio into 50 Hz
frames), shared by the teacher and the students that start from it. wav2vec 2.0, WavLM and
data2vec-audio have the same stack (data2vec-audio's always layer-normed).

Students build it here, from its spec, without transformers: its parameter names are those of
transformers' feature encoders (``HubertFeatureEncoder`` and its kin, the teacher's), so weights
move between the two, and a student (training, evaluation, an exported model) never pays
transformers' import (~2.5 s).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .frames import lengths_to_mask, masked_mean_var

log = logging.getLogger(__name__)


class ConvLayer(nn.Module):
    """Conv1d, then a norm (``layer``: over channels, per frame; ``group``: per channel, over
    time; ``None``), then GELU: one layer of HuBERT's stack."""

    def __init__(self, dims: tuple[int, int], kernel: int, stride: int, bias: bool, norm) -> None:
        super().__init__()
        self.conv = nn.Conv1d(*dims, kernel_size=kernel, stride=stride, bias=bias)
        if norm == "layer":
            self.layer_norm = nn.LayerNorm(dims[1])
        elif norm == "group":
            self.layer_norm = nn.GroupNorm(dims[1], dims[1])
        self.norm = norm
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm == "layer":
            x = self.layer_norm(x.transpose(-2, -1)).transpose(-2, -1)
        elif self.norm == "group":
            x = self.layer_norm(x)
        return self.activation(x)


class ConvStack(nn.Module):
    """HuBERT's conv stack: ``wav (B, S) -> (B, C, T)``. A ``group`` stack normalises only its
    first layer (HuBERT Base), a ``layer`` stack every layer (HuBERT Large)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        if spec["norm"] not in ("group", "layer"):
            raise ValueError(f"conv stack norm {spec['norm']!r}: expected 'group' or 'layer'")
        dims = [1, *spec["conv_dim"]]
        norms = [spec["norm"] if spec["norm"] == "layer" or i == 0 else None
                 for i in range(len(spec["conv_dim"]))]  # fmt: skip
        self.conv_layers = nn.ModuleList(
            ConvLayer((dims[i], dims[i + 1]), k, s, spec["conv_bias"], norms[i])
            for i, (k, s) in enumerate(zip(spec["conv_kernel"], spec["conv_stride"], strict=True))
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav[:, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


def frontend_spec(stack: nn.Module) -> dict[str, Any]:
    """The JSON description of a conv stack (what a student needs to rebuild it), read off the
    module itself (``conv_layers``, each a ``conv``, an optional ``layer_norm``, GELU), so it
    holds for every class that has one: transformers' feature encoders and :class:`ConvStack`.

    Raises:
        ValueError: a stack :class:`ConvStack` cannot rebuild (another norm pattern).
    """
    layers = list(stack.conv_layers)
    norms = [type(getattr(layer, "layer_norm", None)) for layer in layers]
    if all(n is nn.LayerNorm for n in norms):
        norm = "layer"
    elif norms[0] is nn.GroupNorm and all(n is type(None) for n in norms[1:]):
        norm = "group"
    else:
        names = [n.__name__ for n in norms]
        raise ValueError(f"conv stack with norms {names}: expected a group norm on the first "
                         "layer only, or a layer norm on every layer")  # fmt: skip
    convs = [layer.conv for layer in layers]
    return {
        "conv_dim": [c.out_channels for c in convs],
        "conv_kernel": [c.kernel_size[0] for c in convs],
        "conv_stride": [c.stride[0] for c in convs],
        "norm": norm,
        "conv_bias": convs[0].bias is not None,
    }


def build_frontend(spec: dict[str, Any]) -> ConvStack:
    """A freshly initialised conv stack described by :func:`frontend_spec` (initialised as
    transformers' ``HubertFeatureEncoder`` is, draw for draw)."""
    return ConvStack(spec)


def normalize_waveforms(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Layer-normalise each utterance over its valid samples (HuBERT Large's input); padding
    stays zero. Batched: means and variances are taken over each row's valid samples."""
    valid = lengths_to_mask(lengths.to(wav.device), wav.shape[1])
    mean, var = masked_mean_var(wav, valid, 1)
    return (wav - mean) / torch.sqrt(var + 1e-5) * valid


def conv_features(frontend: nn.Module, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``wav (B, S)`` zero-padded -> ``(B, T, C)`` conv features, each utterance's valid frames
    exactly as it gets them alone, the whole batch in one pass.

    A layer-norm stack normalises each frame alone, so valid frames never see the padding. A
    group-norm stack (HuBERT Base) normalises its first layer's output over time: here over
    each utterance's valid frames only (a masked group norm, in fp32 as fairseq does), and no
    valid frame of a later (unnormalised, unpadded) conv layer reads a padded one. Without
    padding (one utterance at a time, the CPU default) the stack's own group norm is exact and
    ~30% cheaper.
    """
    first = frontend.conv_layers[0]
    norm = getattr(first, "layer_norm", None)
    if not isinstance(norm, nn.GroupNorm) or int(lengths.min()) == wav.shape[1]:
        return frontend(wav).transpose(1, 2)  # no padding to keep out of the statistics
    if norm.num_groups != norm.num_channels:
        raise ValueError("only per-channel group norm (HuBERT's) can be batched exactly")
    x = first.conv(wav[:, None])
    kernel, stride = first.conv.kernel_size[0], first.conv.stride[0]
    valid = lengths_to_mask((lengths.to(x.device) - kernel) // stride + 1, x.shape[-1])[:, None]
    x = x.float()
    mean, var = masked_mean_var(x, valid, -1)
    x = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight[:, None] + norm.bias[:, None]
    x = first.activation(x)
    for layer in frontend.conv_layers[1:]:
        x = layer(x)
    return x.transpose(1, 2)
