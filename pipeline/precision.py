"""Mixed precision, one way for the teacher and the students."""

from __future__ import annotations

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, not {name!r}")


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Autocast to ``precision`` on ``device`` (a no-op for ``fp32``)."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
