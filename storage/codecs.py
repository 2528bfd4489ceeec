"""Logit codecs: how per-frame teacher logits are stored, and decoded where the student trains.

A codec turns ``logits (..., C)`` float32 into named per-frame fields and back into dense
``(..., C)`` logits. Logits are stored as logits, never softened probabilities, so any
temperature can be applied when training. Softmax ignores a per-frame shift, and every codec
works on logits shifted per frame (the frame's maximum, or its mean, subtracted first): raw
k-means distance logits run into the thousands, where float16 steps by 0.5 to 2. Encoding and
decoding are torch on any device: stage one encodes whole batches on the teacher's GPU, and
training decodes whole batches on the student's (a gather and a matmul); numpy in gives numpy
out.

- ``full``: all C logits as float16 or float32, shifted by the frame's maximum (exact, or
  exact to float16; a class more than 65504 below the maximum is kept at float16's lowest).
- ``projection``: exact for logits of low rank: the coordinates (float16) of the frame-centred
  logits in their own subspace, fitted on a sample. A cosine cluster head (HuBERT's) gives
  logits of rank ``final_dim`` (256 for Base), so C = 500 costs 2 x 256 bytes, not 2 x 500.
- ``pq``: ``bytes`` bytes per frame: the frame-centred logits' principal components (fitted on
  a sample), grouped so that each group earns about 8 bits by reverse water-filling, each group
  vector-quantised with its own 256-entry codebook (one byte). Decoding gathers each group's
  codeword and multiplies by the basis.

Learned codecs (``projection``, ``pq``) keep their constants (mean, basis, codebooks) in the
cache beside the header, in ``codec.safetensors``; the header holds their layout and digest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.core.registry import Registry
from storage.vq import byte_groups, kmeans, nearest

CODECS: Registry = Registry("logit codec")

Fields = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape after the frame axis, dtype)


@dataclass(frozen=True)
class FullConfig:
    """Attributes: dtype: ``float16`` or ``float32``."""

    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in ("float16", "float32"):
            raise ValueError("full codec dtype must be float16 or float32")


class Codec:
    """What every codec offers (constructed from its config alone; learned ones get their
    constants from :meth:`fit` or from the cache, through :meth:`load`)."""

    name: str
    config_type: type
    learned = False

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.constants: dict[str, torch.Tensor] = {}
        self.layout: dict[str, Any] = {}

    def header(self) -> dict[str, Any]:
        """The header's description: kind, settings and (learned codecs) the fitted layout."""
        return {"name": self.name, **vars(self.cfg), **self.layout}

    def fields(self, num_classes: int) -> Fields:
        raise NotImplementedError

    def bytes_per_frame(self, num_classes: int) -> int:
        return field_bytes(self.fields(num_classes))

    def fit(self, logits: torch.Tensor, seed: int) -> None:
        """Learn the constants from sample ``logits (N, C)`` (learned codecs only)."""

    def load(self, layout: dict[str, Any], constants: dict[str, torch.Tensor]) -> None:
        """Take the fitted ``layout`` (from the header) and ``constants`` (from the cache)."""
        self.layout, self.constants = dict(layout), dict(constants)
        self._moved: dict[torch.device, dict[str, torch.Tensor]] = {}

    def encode(self, logits, targets=None) -> dict:
        """``logits (..., C)`` (numpy or torch, any device) -> the fields, of the input's type."""
        x = as_tensor(logits).float()
        if not bool(torch.isfinite(x).all()):
            raise ValueError("teacher logits have NaN or Inf values")
        return like_input(logits, self._encode(x))

    def decode(self, fields: dict) -> torch.Tensor:
        """Stored fields (numpy or torch, ``(..., *shape)``) -> ``(..., C)`` float32 logits, on
        the fields' device (torch) or the CPU (numpy)."""
        return self._decode({k: as_tensor(v) for k, v in fields.items()})

    def _encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _decode(self, fields: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The constants on ``device`` (moved once per device)."""
        moved = self.__dict__.setdefault("_moved", {})
        if device not in moved:
            moved[device] = {k: v.to(device) for k, v in self.constants.items()}
        return moved[device]


@CODECS.register
class FullCodec(Codec):
    name = "full"
    config_type = FullConfig

    def fields(self, num_classes: int) -> Fields:
        return {"logits": ((num_classes,), self.cfg.dtype)}

    def _encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # shifted by the frame's maximum; a class further below it than float16 reaches has
        # no probability at any temperature, and is kept at float16's lowest value
        lowest = float(np.finfo(self.cfg.dtype).min)
        return {"logits": (x - x.amax(-1, keepdim=True)).clamp(min=lowest).to(self.dtype)}

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.cfg.dtype)

    def _decode(self, fields: dict[str, torch.Tensor]) -> torch.Tensor:
        return fields["logits"].float()


@dataclass(frozen=True)
class ProjectionConfig:
    """Attributes: tolerance: the share of the sample's variance the subspace may leave out
    (float rounding only: a cosine head's logits lie in it exactly)."""

    tolerance: float = 1e-9

    def __post_init__(self) -> None:
        if not 0 < self.tolerance < 1e-3:
            raise ValueError("projection codec tolerance must be in (0, 1e-3)")


@dataclass(frozen=True)
class PQConfig:
    """Attributes: bytes: bytes per frame (one 256-entry codebook per byte); fewer when the
    logits vary along fewer principal components than that."""

    bytes: int

    def __post_init__(self) -> None:
        if not 1 <= self.bytes <= 4096:
            raise ValueError("pq codec bytes must be in [1, 4096]")


class _Subspace(Codec):
    """Shared by the learned codecs: frame-centred logits, their mean over the sample and the
    principal axes (``basis (C, r)``), coordinates ``y = (x - mean) @ basis``."""

    learned = True

    def _principal(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Mean ``(C,)``, all principal axes ``(C, C)`` and their variances (descending)."""
        x = _centre(logits.double())
        mean = x.mean(0)
        variances, axes = torch.linalg.eigh((x - mean).T @ (x - mean) / max(len(x) - 1, 1))
        return mean.float(), axes.flip(1).float(), variances.flip(0).clamp(min=0).cpu().numpy()

    def _coordinates(self, x: torch.Tensor) -> torch.Tensor:
        c = self._on(x.device)
        return (_centre(x) - c["mean"]) @ c["basis"]

    def _logits(self, y: torch.Tensor) -> torch.Tensor:
        c = self._on(y.device)
        return y @ c["basis"].T + c["mean"]


@CODECS.register
class ProjectionCodec(_Subspace):
    name = "projection"
    config_type = ProjectionConfig

    def fields(self, num_classes: int) -> Fields:
        return {"coords": ((self.layout["rank"],), "float16")}

    def fit(self, logits: torch.Tensor, seed: int) -> None:
        mean, axes, variances = self._principal(logits)
        kept = np.cumsum(variances) >= (1 - self.cfg.tolerance) * variances.sum()
        rank = int(np.argmax(kept)) + 1
        self.load({"rank": rank}, {"mean": mean, "basis": axes[:, :rank].contiguous()})

    def _encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"coords": cast_finite(self._coordinates(x), "float16")}

    def _decode(self, fields: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._logits(fields["coords"].float())


@CODECS.register
class PQCodec(_Subspace):
    name = "pq"
    config_type = PQConfig

    def fields(self, num_classes: int) -> Fields:
        """One byte per group: ``bytes``, or fewer where the logits have fewer dimensions."""
        return {"codes": ((len(self.layout.get("groups", [])) or self.cfg.bytes,), "uint8")}

    def fit(self, logits: torch.Tensor, seed: int) -> None:
        mean, axes, variances = self._principal(logits)
        sizes = byte_groups(variances, self.cfg.bytes)
        basis = axes[:, : sum(sizes)].contiguous()
        y = (_centre(logits.float()) - mean) @ basis
        books, start = [], 0
        for size in sizes:  # one k-means per group, over its own coordinates
            books.append(kmeans(y[:, start : start + size], 256, seed + start))
            start += size
        constants = {"mean": mean, "basis": basis, "codebooks": torch.cat(books, dim=1)}
        self.load({"groups": sizes}, constants)  # codebooks: (256, rank)

    def _encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y, books = self._coordinates(x), self._on(x.device)["codebooks"]
        codes, start = [], 0
        for size in self.layout["groups"]:
            codes.append(nearest(y[..., start : start + size], books[:, start : start + size]))
            start += size
        return {"codes": torch.stack(codes, dim=-1).to(torch.uint8)}

    def _decode(self, fields: dict[str, torch.Tensor]) -> torch.Tensor:
        codes = fields["codes"].long()
        c = self._on(codes.device)
        column = c.setdefault("column_group", _column_groups(self.layout["groups"], codes.device))
        index = codes.index_select(-1, column)  # (..., rank): each column's group code
        flat = index.reshape(-1, index.shape[-1])
        y = c["codebooks"].gather(0, flat).reshape(index.shape)  # the codewords, column by column
        return self._logits(y)


def _column_groups(sizes: list[int], device) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(device)


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def field_bytes(fields: Fields) -> int:
    """Bytes per frame of per-frame ``fields`` (name -> (shape after frames, dtype))."""
    return sum(
        int(np.prod(shape, dtype=int)) * np.dtype(dtype).itemsize
        for shape, dtype in fields.values()
    )


def as_tensor(values) -> torch.Tensor:
    return (
        torch.from_numpy(np.ascontiguousarray(values)) if isinstance(values, np.ndarray) else values
    )


def like_input(like, fields: dict[str, torch.Tensor]) -> dict:
    """``fields`` as numpy arrays when the input was numpy, else as the tensors they are."""
    if isinstance(like, np.ndarray):
        return {k: v.cpu().numpy() for k, v in fields.items()}
    return fields


def cast_finite(values: torch.Tensor, dtype: str) -> torch.Tensor:
    """``values`` as ``dtype``, or an error if they are not finite there (float16 ends at 65504)."""
    largest = float(values.abs().max()) if values.numel() else 0.0
    if not math.isfinite(largest) or largest > float(np.finfo(dtype).max):
        raise ValueError(
            f"logits span {largest:.4g} within a frame, beyond {dtype}; store them as float32 "
            "(cache_teacher.codec.dtype) or scale them down (e.g. raise kmeans.temperature)"
        )
    return values.to(getattr(torch, dtype))


def codec_from_header(header_codec: dict[str, Any], constants: dict | None = None) -> Codec:
    """The codec a cache header describes, with its fitted ``constants`` (learned codecs)."""
    codec_type = CODECS[header_codec["name"]]
    names = set(codec_type.config_type.__dataclass_fields__)
    codec = codec_type(codec_type.config_type(**{k: header_codec[k] for k in names}))
    if codec.learned:
        layout = {k: v for k, v in header_codec.items() if k not in names | {"name", "constants"}}
        codec.load(layout, constants or {})
    return codec


def repair_argmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Decoded ``logits (..., C)`` whose argmax is ``targets (...)``, the teacher's argmax (exact
    side information): where another class is the argmax (or ties with the target), the
    target's logit is raised a hair above the frame's maximum; other frames are unchanged."""
    index = targets[..., None].long()
    target = logits.gather(-1, index)[..., 0]
    wrong = logits.argmax(-1) != targets
    top = logits.amax(-1)
    hair = torch.maximum(top + 1e-3, torch.nextafter(top, torch.full_like(top, float("inf"))))
    raised = torch.where(wrong, hair, target)  # above the top even where 1e-3 rounds away
    return logits.scatter(-1, index, raised[..., None])
