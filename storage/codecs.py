"""Logit codecs: how per-frame teacher logits are stored, and decoded for the losses.

A codec turns ``logits (..., C)`` float32 (+ the frame targets) into named per-frame fields and
back into dense ``(n, C)`` logits. Logits are stored as logits, never softened probabilities.
Encoding is one torch implementation for any device: stage one encodes whole batches on the
teacher's GPU and moves only the encoded fields to the host; numpy arrays in give numpy out.

- ``full``: all C logits as float16 or float32 (exact, or exact to fp16).
- ``topk``: the k largest logits (fp16) and their class ids, with the frame's target class
  always kept, plus ``rest_lse``, the log-sum-exp of the C - k logits left out. Decoding puts
  ``rest_lse - log(C - k)`` on every left-out class, so the softmax mass of the left-out classes
  is exact at tau = 1 (only how it is spread among them is lost). At tau != 1 the left-out mass
  is approximate: it is computed as if the left-out logits were all equal, which overstates it
  for tau > 1 and understates it for tau < 1; the error shrinks as the left-out mass does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.core.registry import Registry

CODECS: Registry = Registry("logit codec")


@dataclass(frozen=True)
class FullConfig:
    """Attributes: dtype: ``float16`` or ``float32``."""

    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in ("float16", "float32"):
            raise ValueError("full codec dtype must be float16 or float32")


@CODECS.register
class FullCodec:
    name = "full"
    config_type = FullConfig

    def __init__(self, cfg: FullConfig) -> None:
        self.cfg = cfg

    def header(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.cfg.dtype}

    def fields(self, num_classes: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-frame fields: name -> (shape after the frame axis, dtype)."""
        return {"logits": ((num_classes,), self.cfg.dtype)}

    def bytes_per_frame(self, num_classes: int) -> int:
        return num_classes * np.dtype(self.cfg.dtype).itemsize

    def encode(self, logits, targets) -> dict:
        """``logits (..., C)`` (numpy or torch, any device) -> ``{"logits"}`` of that type."""
        return _as_input(logits, {"logits": _cast(_tensor(logits), self.cfg.dtype)})

    def decode(self, fields: dict[str, np.ndarray], num_classes: int) -> np.ndarray:
        return fields["logits"].astype(np.float32)


@dataclass(frozen=True)
class TopKConfig:
    """Attributes: k: logits kept per frame (the target class is always among them)."""

    k: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("topk codec needs k >= 1")


@CODECS.register
class TopKCodec:
    name = "topk"
    config_type = TopKConfig

    def __init__(self, cfg: TopKConfig) -> None:
        self.cfg = cfg

    def header(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.cfg.k, "value_dtype": "float16"}

    def _k(self, num_classes: int) -> int:
        return min(self.cfg.k, num_classes)

    @staticmethod
    def _id_dtype(num_classes: int) -> str:
        return "int16" if num_classes <= np.iinfo(np.int16).max else "int32"

    def fields(self, num_classes: int) -> dict[str, tuple[tuple[int, ...], str]]:
        k = self._k(num_classes)
        return {
            "topk_values": ((k,), "float16"),
            "topk_ids": ((k,), self._id_dtype(num_classes)),
            "rest_lse": ((), "float32"),
        }

    def bytes_per_frame(self, num_classes: int) -> int:
        return field_bytes(self.fields(num_classes))

    def encode(self, logits, targets) -> dict:
        """``logits (..., C)`` and ``targets (...)`` (numpy or torch, any device) -> the k
        largest logits in descending order with the target's always among them (replacing the
        smallest kept one where it is missing), their ids, and the log-sum-exp of the rest."""
        x, y = _tensor(logits).float(), _tensor(targets).long()
        c = x.shape[-1]
        k = self._k(c)
        values, ids = torch.topk(x, k, dim=-1)
        missing = ~(ids == y[..., None]).any(-1)
        last = torch.arange(k, device=x.device) == k - 1
        ids = torch.where(missing[..., None] & last, y[..., None], ids)
        values = x.gather(-1, ids)
        order = torch.argsort(values, dim=-1, descending=True, stable=True)
        ids, values = ids.gather(-1, order), values.gather(-1, order)
        kept = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, ids, True)
        rest = torch.logsumexp(x.masked_fill(kept, float("-inf")), dim=-1)
        return _as_input(logits, {
            "topk_values": _cast(values, "float16"),
            "topk_ids": ids.to(getattr(torch, self._id_dtype(c))),
            "rest_lse": rest.float(),
        })  # fmt: skip

    def decode(self, fields: dict[str, np.ndarray], num_classes: int) -> np.ndarray:
        values, ids = fields["topk_values"], fields["topk_ids"].astype(np.int64)
        n, k = values.shape
        if k < num_classes:
            fill = fields["rest_lse"].astype(np.float32) - math.log(num_classes - k)
        else:
            fill = np.zeros(n, dtype=np.float32)
        dense = np.repeat(fill[:, None], num_classes, axis=1)
        np.put_along_axis(dense, ids, values.astype(np.float32), axis=1)
        return dense


def field_bytes(fields: dict[str, tuple[tuple[int, ...], str]]) -> int:
    """Bytes per frame of per-frame ``fields`` (name -> (shape after frames, dtype))."""
    return sum(
        int(np.prod(shape, dtype=int)) * np.dtype(dtype).itemsize
        for shape, dtype in fields.values()
    )


def _tensor(values) -> torch.Tensor:
    return torch.from_numpy(values) if isinstance(values, np.ndarray) else values


def _as_input(like, fields: dict[str, torch.Tensor]) -> dict:
    """``fields`` as numpy arrays when the input was numpy, else as the tensors they are."""
    if isinstance(like, np.ndarray):
        return {k: v.cpu().numpy() for k, v in fields.items()}
    return fields


def _cast(values: torch.Tensor, dtype: str) -> torch.Tensor:
    """``values`` as ``dtype``, or an error if they are not finite there (float16 ends at 65504)."""
    largest = float(values.abs().max()) if values.numel() else 0.0
    if not math.isfinite(largest) or largest > float(np.finfo(dtype).max):
        raise ValueError(
            f"logits are not finite as {dtype} (largest magnitude {largest:.4g}); store them as "
            "float32 (cache_teacher.codec.dtype) or scale them down (e.g. raise "
            "kmeans.temperature)"
        )
    return values.to(getattr(torch, dtype))


def codec_from_header(header_codec: dict[str, Any]):
    """The codec a cache header describes."""
    params = {k: v for k, v in header_codec.items() if k not in ("name", "value_dtype")}
    codec_type = CODECS[header_codec["name"]]
    return codec_type(codec_type.config_type(**params))


FEATURE_ENCODINGS = ("float16", "int8")


def feature_fields(name: str, dim: int, encoding: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per-frame fields of teacher feature ``name`` (``(n, dim)``) stored as ``encoding``:
    ``float16`` (2 bytes/value), or ``int8`` with a float32 scale per frame (1 byte/value + 4
    bytes/frame; the error is at most half a step, ``max|x| / 254``, of that frame)."""
    if encoding not in FEATURE_ENCODINGS:
        raise ValueError(f"feature encoding {encoding!r}: choose from {FEATURE_ENCODINGS}")
    fields = {f"feat_{name}": ((dim,), encoding)}
    if encoding == "int8":
        fields[f"feat_{name}_scale"] = ((), "float32")
    return fields


def encode_feature(name: str, x, encoding: str) -> dict:
    """``x (..., dim)`` float (numpy or torch, any device) -> the fields of
    :func:`feature_fields`, of the input's type."""
    t = _tensor(x).float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"teacher feature {name} has NaN or Inf values")
    if encoding == "float16":
        return _as_input(x, {f"feat_{name}": _cast(t, "float16")})
    scale = t.abs().amax(-1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))[..., None]
    q = torch.clamp(torch.round(t / safe), -127, 127).to(torch.int8)
    return _as_input(x, {f"feat_{name}": q, f"feat_{name}_scale": scale})


def decode_feature(name: str, fields: dict[str, np.ndarray], encoding: str) -> np.ndarray:
    """The stored fields of feature ``name`` -> ``(n, dim)`` float32."""
    x = fields[f"feat_{name}"].astype(np.float32)
    if encoding == "int8":
        x *= fields[f"feat_{name}_scale"][:, None]
    return x
