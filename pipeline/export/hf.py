"""A student as a Hugging Face-style directory: ``config.json`` (how to build it),
``model.safetensors`` (its weights) and ``preprocessor_config.json`` (16 kHz mono waveforms),
loaded in one call and pushed to a hub with huggingface_hub's usual calls::

    from pipeline.export.hf import HubertKDStudent

    student = HubertKDStudent.from_pretrained("exports/dkd_b4/hf")  # or a hub id
    logits, frame_lengths = student(wav, lengths)  # (B, T, C) at 50 Hz
    layers, _ = student.hidden_states(wav, lengths)  # every layer, for downstream tasks
    student.push_to_hub("you/hubert-kd-dkd-b4")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from pipeline.audio.files import SAMPLE_RATE
from pipeline.export.inference import Inference
from pipeline.students.checkpoint import from_recipe, recipe


class HubertKDStudent(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="hubert-kd",
    tags=["audio", "speech", "knowledge-distillation", "hubert"],
    paper_url="https://arxiv.org/abs/2309.09920",
):
    """A distilled student, rebuilt from the recipe in its ``config.json``.

    Args:
        recipe: the student's architecture, sizes and front end, as its checkpoint records
            them (``pipeline.students.checkpoint.recipe``).
    """

    def __init__(self, recipe: dict[str, Any]) -> None:
        super().__init__()
        self.recipe = recipe
        self.inference = Inference(from_recipe(recipe, "config.json"))

    @property
    def student(self) -> nn.Module:
        return self.inference.student

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor):
        """``wav (B, S)`` zero-padded 16 kHz audio, ``lengths (B,)`` -> ``(outputs (B, T, D),
        frame lengths (B,))``: cluster logits, or the last layer of a feature student."""
        return self.inference(wav, lengths)

    def hidden_states(self, wav: torch.Tensor, lengths: torch.Tensor):
        """Every layer's output ``(B, T, D_l)`` and the frame lengths."""
        return self.student.extract_features(wav, lengths)

    @classmethod
    def _from_pretrained(cls, **kwargs):
        return super()._from_pretrained(**{**kwargs, "strict": True})  # no weight left out


def export_hf(student: nn.Module, out: Path) -> HubertKDStudent:
    """Write ``student`` (as :func:`~pipeline.students.checkpoint.load_student` gives it) as a
    Hugging Face-style directory ``out``."""
    from transformers import Wav2Vec2FeatureExtractor

    exported = HubertKDStudent(recipe(student))
    exported.student.load_state_dict(student.state_dict())
    exported.save_pretrained(out)
    Wav2Vec2FeatureExtractor(  # raw waveforms: the student normalises them itself if it must
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=False,
        return_attention_mask=True,
    ).save_pretrained(out)  # fmt: skip
    return exported.eval()
