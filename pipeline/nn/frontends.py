"""Student front ends: the teacher's conv stack (trainable or frozen) and a light fbank one,
behind one module every student architecture uses."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .conv import build_frontend, conv_features, normalize_waveforms
from .fbank import LogMel, masked_cmvn
from .frames import lengths_to_mask

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
    ``spec``: layer-normalised waveforms if it was trained on them; batched exactly (see
    :func:`conv_features`)."""
    if spec.get("normalize", False):
        wav = normalize_waveforms(wav, lengths)
    return conv_features(frontend, wav, lengths)


class FbankFrontend(nn.Module):
    """A light front end: 80 Kaldi log-mel bins every 10 ms (25 ms window, per-utterance
    mean/variance normalised), a stride-2 conv and a stride-1 conv (kernel 3, GELU).

    With HuBERT's frame stack (a 400-sample receptive field every 320 samples) the output has
    exactly the teacher's frame count: frame ``i`` is centred on fbank frame ``2 i``, whose
    window starts at sample ``320 i``, as teacher frame ``i``'s does. A padded batch runs at
    once: what lies beyond an utterance's frames is zeroed before each conv, as the zero
    padding of the utterance alone would be.
    """

    BINS = 80

    def __init__(self, dim: int, frames) -> None:
        super().__init__()
        if frames.hop != 320 or frames.receptive_field != 400:
            raise ValueError(
                "frontend: fbank aligns with HuBERT's frame stack (400-sample field, 320 hop) only"
            )
        self.frames = frames
        self.log_mel = LogMel(self.BINS, shift_ms=10.0)
        self.convs = nn.Sequential(
            nn.Conv1d(self.BINS, dim, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv1d(dim, dim, 3, padding=1),
            nn.GELU(),
        )

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``wav (B, S)`` zero-padded -> ``(B, T, dim)``; per utterance, as it would run alone."""
        feats, fbank_frames = self.log_mel(wav, lengths)
        first, act, second, _ = self.convs
        x = act(first(masked_cmvn(feats, fbank_frames).transpose(1, 2)))
        valid = lengths_to_mask(self.frames.num_frames(lengths), x.shape[-1])[:, None]
        return (act(second(x * valid)) * valid).transpose(1, 2)


FRONTENDS = ("conv", "cached", "fbank")


def check_frontend_choice(frontend: str, frontend_init: str) -> None:
    """Validate a student config's ``frontend`` and ``frontend_init`` (shared by every student)."""
    if frontend_init not in ("teacher", "random"):
        raise ValueError("frontend_init must be teacher or random")
    if frontend not in FRONTENDS:
        raise ValueError(f"frontend must be one of {FRONTENDS}")


class StudentFrontend(nn.Module):
    """What turns audio into a student's frames, one of :data:`FRONTENDS`:

    - ``conv``: a trainable conv stack, the teacher's (``frontend_init: teacher``, weights
      from the cache) or a fresh layer-norm one of ``conv_dim`` channels;
    - ``cached``: the teacher's conv stack, frozen; training reads its output from the cache
      (``conv`` in ``cache_teacher.features``), inference runs it on raw audio;
    - ``fbank``: 80 log-mel bins and two small convs (:class:`FbankFrontend`).

    Args:
        saved: the ``spec`` of a checkpoint, to rebuild exactly that front end.
    """

    def __init__(
        self,
        kind: str,
        conv_dim: int,
        frontend_init: str,
        frames,
        teacher_frontend: tuple[dict, dict] | None,
        saved: dict | None = None,
    ) -> None:
        super().__init__()
        if kind not in FRONTENDS:
            raise ValueError(f"frontend must be one of {FRONTENDS}, not {kind!r}")
        self.kind = kind
        if kind == "fbank":
            self.spec = saved or {"type": "fbank", "conv_dim": conv_dim}
            self.net = FbankFrontend(conv_dim, frames)
            self.width = conv_dim
            return
        if kind == "cached" and saved is None and teacher_frontend is None:
            raise ValueError("frontend: cached needs the teacher's conv stack; the cache has none")
        from_teacher = kind == "cached" or frontend_init == "teacher"
        self.net, self.spec = student_conv_frontend(
            conv_dim, from_teacher, frames, teacher_frontend, saved
        )
        self.width = self.spec["conv_dim"][-1]
        if kind == "cached":
            self.net.requires_grad_(False)  # the teacher's, frozen; trained on its cache

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Raw zero-padded audio ``(B, S)`` -> ``(B, T, width)``."""
        if self.kind == "fbank":
            return self.net(wav, lengths)
        return run_conv_frontend(self.net, self.spec, wav, lengths)

    def train_features(self, batch) -> torch.Tensor:
        """The frames of a training batch: read from the cache for ``cached``, else computed."""
        if self.kind != "cached":
            return self(batch.wav, batch.lengths)
        if "conv" not in batch.features:
            raise ValueError(
                "frontend: cached needs the teacher's conv features in the cache: add conv to "
                "cache_teacher.features and rerun cache-teacher"
            )
        return batch.features["conv"]
