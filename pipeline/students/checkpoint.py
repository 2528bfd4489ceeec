"""Student checkpoints: weights plus everything needed to rebuild the module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.config import from_dict, to_dict
from pipeline.core.errors import CheckpointError
from pipeline.core.io import atomic_file
from pipeline.core.safe_load import load_weights
from pipeline.nn.frames import FrameSpec
from pipeline.nn.students import rebuild
from pipeline.students.base import STUDENTS, StudentConfig

CHECKPOINT = "model.pt"  # in students/<name>/, beside its training log (pipeline.training.live)


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


RECIPE = ("arch", "model_config", "num_classes", "feature_dims", "frames", "frontend")


def recipe(model: nn.Module) -> dict[str, Any]:
    """Everything needed to rebuild ``model`` (without its weights), as plain JSON."""
    frames = model.frames
    return {
        "arch": model.name,
        "model_config": to_dict(model.cfg),
        "num_classes": model.num_classes,
        "feature_dims": model.feature_dims,
        "frames": {"kernels": list(frames.kernels), "strides": list(frames.strides)},
        "frontend": model.frontend_spec,
    }


def from_recipe(spec: dict[str, Any], where: str) -> nn.Module:
    """A freshly built student from :func:`recipe`'s dict (from a checkpoint or an export).

    Raises:
        CheckpointError: ``spec`` is not such a recipe (``where`` names its file).
    """
    if not isinstance(spec, dict) or any(k not in spec for k in RECIPE):
        raise CheckpointError(f"{where}: not a student written by train-student")
    arch = STUDENTS[spec["arch"]]
    return rebuild(spec, from_dict(arch.config_type, spec["model_config"], f"{where}:model_config"))


def save_student(
    path: Path, models: dict[int, nn.Module], cfg: StudentConfig, extra: dict[str, Any]
) -> None:
    """Write ``path`` (a ``.pt`` file) atomically: the recipe, the losses, provenance, and the
    weights of each training seed (``models``: seed -> model, in the student's seed order)."""
    first = next(iter(models.values()))
    payload = {
        **recipe(first),
        "losses": {name: to_dict(c) for name, c in cfg.losses.items()},
        "seeds": list(models),
        "state_dicts": [m.state_dict() for m in models.values()],
        **extra,
    }
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def merge_checkpoints(parts: list[Path], path: Path, seeds: tuple[int, ...]) -> None:
    """Write ``path``, one student's checkpoint of every seed of ``seeds`` (in that order), from
    checkpoints of that student holding disjoint sets of them (``parts``), atomically; the
    recipe, losses and provenance are the first part's.

    Raises:
        CheckpointError: a part is not a student checkpoint, or a seed is in none.
    """
    loaded = [load_weights(part, "student checkpoint") for part in parts]
    states = {seed: state for ckpt in loaded
              for seed, state in zip(ckpt["seeds"], ckpt["state_dicts"], strict=True)}  # fmt: skip
    missing = [seed for seed in seeds if seed not in states]
    if missing:
        raise CheckpointError(f"{path}: training seeds {missing} are in none of {parts}")
    payload = {**loaded[0], "seeds": list(seeds), "state_dicts": [states[s] for s in seeds]}
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def load_students(path: Path) -> tuple[dict[int, nn.Module], dict[str, Any]]:
    """Rebuild every training seed of a saved student, in eval mode; returns ``({seed: model}
    in the student's seed order, checkpoint dict)``.

    Raises:
        CheckpointError: not a student checkpoint (named).
    """
    ckpt = load_weights(path, "student checkpoint")
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        raise CheckpointError(f"{path}: a student checkpoint of an earlier version (one model, "
                              "before training seeds): retrain it with train-student")  # fmt: skip
    if not isinstance(ckpt, dict) or "state_dicts" not in ckpt or "seeds" not in ckpt:
        raise CheckpointError(f"{path}: not a student checkpoint written by train-student")
    models = {}
    for seed, state in zip(ckpt["seeds"], ckpt["state_dicts"], strict=True):
        model = from_recipe(ckpt, str(path))
        model.load_state_dict(state)
        models[seed] = model.eval()
    return models, ckpt


def load_student(path: Path, seed: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved student in eval mode, with the weights of training seed ``seed`` (None:
    the first it declares, never a choice by results); returns ``(model, checkpoint dict)``.

    Raises:
        CheckpointError: not a student checkpoint, or no such seed (named).
    """
    models, ckpt = load_students(path)
    return models[training_seed(ckpt, seed, path)], ckpt


def training_seed(ckpt: dict[str, Any], seed: int | None, path: Path) -> int:
    """``seed`` if the checkpoint has it; None: its first (the student's first declared).

    Raises:
        CheckpointError: it has no such seed (named, with the ones it has).
    """
    if seed is None:
        return ckpt["seeds"][0]
    if seed not in ckpt["seeds"]:
        raise CheckpointError(f"{path}: no training seed {seed} (it has {ckpt['seeds']})")
    return seed
