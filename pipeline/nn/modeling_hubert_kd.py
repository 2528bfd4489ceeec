"""A distilled student as a transformers model, for
``AutoModel.from_pretrained(dir, trust_remote_code=True)``: an exported directory carries this
file and the modules it imports (all of ``pipeline.nn``'s that it needs, torch only), so a
student loads with transformers alone, wherever it is found::

    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained("exports/dkd_b4/hf", trust_remote_code=True)
    extractor = AutoFeatureExtractor.from_pretrained("exports/dkd_b4/hf")
    inputs = extractor(waveforms, sampling_rate=16000, padding=True, return_tensors="pt")
    outputs = model(**inputs, output_hidden_states=True)
    outputs.logits             # (B, T, C) cluster logits at 50 Hz (students that predict them)
    outputs.last_hidden_state  # (B, T, D), zero beyond each utterance's frames
    outputs.hidden_states      # every layer (front end's projection, then each LSTM layer)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .frames import HUBERT_FRAMES, FrameSpec
from .hidden import same_width
from .students import ARCHITECTURES, rebuild


class HubertKDConfig(PretrainedConfig):
    """A student's recipe: its architecture (``arch``) and that architecture's settings
    (``model_config``), the classes it predicts, its frame stack and front end."""

    model_type = "hubert_kd"

    def __init__(
        self,
        arch: str = "lstm",
        model_config: dict[str, Any] | None = None,
        num_classes: int = 0,
        frames: dict[str, list[int]] | None = None,
        frontend: dict[str, Any] | None = None,
        feature_dims: dict[str, int] | None = None,
        **kwargs,
    ) -> None:
        self.arch = arch
        self.model_config = model_config or {}
        self.num_classes = num_classes
        self.frames = frames or {"kernels": list(HUBERT_FRAMES.kernels),
                                 "strides": list(HUBERT_FRAMES.strides)}  # fmt: skip
        self.frontend = frontend
        self.feature_dims = feature_dims or {}
        super().__init__(**kwargs)

    @property
    def recipe(self) -> dict[str, Any]:
        keys = ("arch", "num_classes", "frames", "frontend", "feature_dims")
        return {k: getattr(self, k) for k in keys}


@dataclass
class HubertKDOutput(ModelOutput):
    """``last_hidden_state (B, T, D)``; ``hidden_states``: every layer (with
    ``output_hidden_states``); ``logits (B, T, C)`` of students that predict clusters."""

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    logits: torch.FloatTensor | None = None


class HubertKDModel(PreTrainedModel):
    """A student on raw 16 kHz waveforms, as ``Wav2Vec2FeatureExtractor`` prepares them."""

    config_class = HubertKDConfig
    main_input_name = "input_values"
    base_model_prefix = "student"

    def __init__(self, config: HubertKDConfig) -> None:
        super().__init__(config)
        architecture = ARCHITECTURES[config.arch]
        self.student = rebuild(config.recipe, architecture.config_type(**config.model_config))
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Nothing: the student initialises itself, and its weights come from the file."""

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> HubertKDOutput | tuple:
        """``input_values (B, S)`` zero-padded 16 kHz audio; ``attention_mask (B, S)`` 1 on its
        samples (default: all of them)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_values, dtype=torch.long)
        lengths = attention_mask.sum(-1)
        wav = input_values * attention_mask.to(input_values.dtype)
        layers, _ = self.student.extract_features(wav, lengths)
        logits = self.student.head(layers[-1]) if self.student.predicts_logits else None
        hidden = tuple(layers) if output_hidden_states else None
        output = HubertKDOutput(last_hidden_state=layers[-1], hidden_states=hidden, logits=logits)
        return output if return_dict is not False else output.to_tuple()

    @property
    def frames(self) -> FrameSpec:
        return FrameSpec(tuple(self.config.frames["kernels"]), tuple(self.config.frames["strides"]))

    @property
    def hop(self) -> int:
        """Samples between frames (320 at HuBERT's 50 frames per second)."""
        return self.frames.hop

    def _get_feat_extract_output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Frames of inputs of ``input_lengths`` samples (transformers' name for it)."""
        return self.frames.num_frames(input_lengths)

    @staticmethod
    def downstream_layers(hidden_states: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """The layers a downstream model weighs in a learnt sum (SUPERB's way): those as wide as
        the last."""
        return same_width(list(hidden_states))


HubertKDConfig.register_for_auto_class()
HubertKDModel.register_for_auto_class("AutoModel")
