"""Teacher features cached per frame beside the logits (the conv stack's output, Transformer
layers): how they are stored and read back."""

from __future__ import annotations

import torch

from storage.codecs import Fields, as_tensor, cast_finite, like_input

FEATURE_ENCODINGS = ("float16", "int8")


def feature_fields(name: str, dim: int, encoding: str) -> Fields:
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
    t = as_tensor(x).float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"teacher feature {name} has NaN or Inf values")
    if encoding == "float16":
        return like_input(x, {f"feat_{name}": cast_finite(t, "float16")})
    scale = t.abs().amax(-1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))[..., None]
    q = torch.clamp(torch.round(t / safe), -127, 127).to(torch.int8)
    return like_input(x, {f"feat_{name}": q, f"feat_{name}_scale": scale})


def decode_feature(name: str, fields: dict, encoding: str) -> torch.Tensor:
    """The stored fields of feature ``name`` -> ``(n, dim)`` float32 (torch)."""
    x = as_tensor(fields[f"feat_{name}"]).float()
    if encoding == "int8":
        x = x * as_tensor(fields[f"feat_{name}_scale"]).float()[..., None]
    return x
