"""Devices and mixed precision, one way for the teacher, the students and the evaluation."""

from __future__ import annotations

import re

import torch

from pipeline.core.config import check
from pipeline.core.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_precision(name: str) -> None:
    check(name in PRECISIONS, "precision", f"must be one of {list(PRECISIONS)}, not {name!r}")


def check_device(name: str) -> None:
    """A device name this tool runs on: ``cpu``, ``cuda`` or ``cuda:<index>``."""
    check(bool(_DEVICE.match(name)), "device", f"must be cpu, cuda or cuda:<index>, not {name!r}")


def resolve_device(name: str, key: str) -> torch.device:
    """The torch device for the setting ``key`` (already format-checked), if this machine has it.

    Raises:
        ConfigError: CUDA asked for where there is none (naming ``key``).
    """
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{key}: {name} asked for, but CUDA is not available here (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda}); set {key}: cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{key}: {name}, but this machine has "
                              f"{torch.cuda.device_count()} CUDA devices")  # fmt: skip
    return device


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Autocast to ``precision`` on ``device`` (a no-op for ``fp32``)."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
