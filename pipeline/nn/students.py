"""The student architectures by name, and rebuilding one from its recipe (a checkpoint's or an
exported model's ``config.json``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .distilhubert import DistilHubertStudent
from .frames import FrameSpec
from .lstm import LSTMStudent

ARCHITECTURES = {cls.name: cls for cls in (LSTMStudent, DistilHubertStudent)}


def rebuild(recipe: dict[str, Any], model_config: Any) -> nn.Module:
    """A freshly initialised student of ``recipe`` (``arch``, ``num_classes``, ``frames``,
    ``frontend``, ``feature_dims``) with its architecture's ``model_config``."""
    frames = FrameSpec(tuple(recipe["frames"]["kernels"]), tuple(recipe["frames"]["strides"]))
    return ARCHITECTURES[recipe["arch"]](
        model_config, num_classes=recipe["num_classes"], frames=frames,
        frontend=recipe["frontend"], feature_dims=recipe.get("feature_dims") or {},
    )  # fmt: skip
