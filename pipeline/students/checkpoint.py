"""Student checkpoints: weights plus everything needed to rebuild the module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.audio.frames import HUBERT_FRAMES, FrameSpec
from pipeline.core.config import from_dict, to_dict
from pipeline.core.errors import CheckpointError
from pipeline.core.io import atomic_file
from pipeline.core.safe_load import load_weights
from pipeline.students.base import STUDENTS, StudentConfig

CHECKPOINT = "model.pt"  # in students/<name>/, beside:
METRICS = "metrics.json"  # parameters, training summary, final losses
CURVE = "curve.json"  # the logged training curve


def build_student(
    cfg: StudentConfig,
    num_classes: int,
    frames: FrameSpec,
    teacher_frontend: tuple[dict, dict] | None = None,
    feature_dims: dict[str, int] | None = None,
) -> nn.Module:
    """Instantiate the registered architecture ``cfg.arch``; ``teacher_frontend`` is the
    teacher's conv stack ``(spec, weights)`` from the cache, for students that start from it;
    ``feature_dims`` the widths of the cache's teacher features, for students that predict them."""
    arch = STUDENTS[cfg.arch]
    return arch(
        cfg.model,
        num_classes=num_classes,
        frames=frames,
        teacher_frontend=teacher_frontend,
        feature_dims=feature_dims,
    )


def save_student(
    path: Path, model: nn.Module, cfg: StudentConfig, frames: FrameSpec, extra: dict[str, Any]
) -> None:
    """Write ``path`` (a ``.pt`` file) atomically: state dict, architecture, sizes, provenance."""
    payload = {
        "arch": cfg.arch,
        "model_config": to_dict(cfg.model),
        "losses": {name: to_dict(c) for name, c in cfg.losses.items()},
        "num_classes": model.num_classes,
        "feature_dims": model.feature_dims,
        "frames": {"kernels": list(frames.kernels), "strides": list(frames.strides)},
        "frontend": model.frontend_spec,
        "state_dict": model.state_dict(),
        **extra,
    }
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def load_student(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved student in eval mode; returns ``(model, checkpoint dict)``."""
    ckpt = load_weights(path, "student checkpoint")
    needed = ("arch", "model_config", "frames", "num_classes", "frontend", "state_dict")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in needed):
        raise CheckpointError(f"{path}: not a student checkpoint written by train-student")
    arch = STUDENTS[ckpt["arch"]]
    model_cfg = from_dict(arch.config_type, ckpt["model_config"], f"{path}:model_config")
    frames = FrameSpec(tuple(ckpt["frames"]["kernels"]), tuple(ckpt["frames"]["strides"]))
    model = arch(
        model_cfg,
        num_classes=ckpt["num_classes"],
        frames=frames,
        frontend=ckpt["frontend"],
        feature_dims=ckpt.get("feature_dims", {}),
    )
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


def describe_sizes(
    students: dict[str, StudentConfig], cache: str | Path, classes: int | None
) -> list[str]:
    """One line per student: its parameters in total and per part, for the cache at ``cache``
    when there is one (its C, frame stack, conv stack and features), else HuBERT's frame stack
    and ``classes`` (default 500)."""
    from storage import read_frontend, read_header
    from storage.header import HEADER
    from storage.location import files

    frames, num_classes, teacher_frontend, dims = HUBERT_FRAMES, classes or 500, None, {}
    if HEADER in files(cache):
        header = read_header(cache)
        frames = FrameSpec(tuple(header.frame_kernels), tuple(header.frame_strides))
        num_classes = classes or header.num_classes
        teacher_frontend = read_frontend(cache)
        dims = {f: spec["dim"] for f, spec in header.features.items()}
    lines = []
    for name, cfg in students.items():
        model = build_student(cfg, num_classes, frames, teacher_frontend, dims)
        parts = {
            part: sum(p.numel() for p in module.parameters())
            for part, module in model.named_children()
            if any(True for _ in module.parameters())
        }
        total = sum(parts.values())
        detail = ", ".join(f"{part} {n / 1e6:.2f}M" for part, n in parts.items())
        lines.append(
            f"{name}: {total:,} parameters ({total / 1e6:.2f}M; C={num_classes}: {detail})"
        )
    return lines
