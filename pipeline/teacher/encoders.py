"""The speech encoders a teacher can be, and the little that differs between them, in one place.

HuBERT (and its variants, such as mHuBERT), wav2vec 2.0, WavLM and data2vec-audio share one
shape in transformers: a conv stack (``feature_extractor.conv_layers``) that turns 16 kHz audio
into 50 Hz frames, a feature projection, and a Transformer (``encoder``, its blocks in
``encoder.layers``) whose block outputs are the ``hidden_states``. What differs inside the
Transformer (WavLM's gated relative position bias, data2vec-audio's stack of positional conv
layers, pre- or post-layer-norm blocks) each class runs itself; what differs in the interface
is handled here: which class a ``config.json`` names, the feature projection's return value,
data2vec-audio's positional conv stack under padding, and what the teacher cannot run (a
frame-rate-changing adapter, a non-GELU conv stack).

An ``hf:`` model is loaded strictly: a missing, unexpected or mis-shaped weight of the encoder
is a :class:`CheckpointError` naming the keys. Weights outside the encoder's own modules (the
task head of a ``*ForCTC`` or ``*ForPreTraining`` checkpoint: ``lm_head``, ``quantizer``,
``project_q``...) are not part of the teacher and are dropped, with a log line naming them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import PretrainedConfig, PreTrainedModel

from pipeline.core.errors import CheckpointError

log = logging.getLogger(__name__)

# transformers' model_type -> the class of its bare encoder (no task head)
ENCODERS = {
    "hubert": "HubertModel",
    "wav2vec2": "Wav2Vec2Model",
    "wavlm": "WavLMModel",
    "data2vec-audio": "Data2VecAudioModel",
}


def supported() -> str:
    return ", ".join(ENCODERS)


def encoder_class(config: dict, where: str) -> type[PreTrainedModel]:
    """The transformers class of the speech encoder a ``config.json`` (its dict) describes.

    Raises:
        CheckpointError: not one of :data:`ENCODERS`, or a configuration the teacher cannot
            run exactly (named, with what is supported).
    """
    import transformers

    model_type = config.get("model_type") or "(none)"
    if model_type not in ENCODERS:
        raise CheckpointError(
            f"{where}: model type {model_type!r} is not a supported speech encoder; "
            f"supported: {supported()}"
        )
    if config.get("add_adapter", False):
        raise CheckpointError(
            f"{where}: {model_type} with add_adapter: true (an adapter after the Transformer "
            "changes the frame rate); only the bare encoder is supported"
        )
    activation = config.get("feat_extract_activation", "gelu")
    if activation != "gelu":
        raise CheckpointError(
            f"{where}: conv stack activation {activation!r}; only gelu (every released "
            "checkpoint's) is supported"
        )
    return getattr(transformers, ENCODERS[model_type])


def load_encoder(source: str, where: str, offline: bool) -> PreTrainedModel:
    """The encoder at ``source`` (a hub id or a local directory), built as the class its
    ``config.json`` names (``model_type``, as transformers' Auto classes read it) and loaded
    strictly, in float32.

    Raises:
        CheckpointError: an unsupported model type (before any weight is read), or weights
            that do not fit the class (naming the keys).
        OSError: no such model (locally, or on the hub), or unreadable files.
    """
    config, _ = PretrainedConfig.get_config_dict(source, local_files_only=offline)
    cls = encoder_class(config, where)
    try:
        with _report_off():  # transformers' load report lists what we raise or log below
            model, info = cls.from_pretrained(
                source, local_files_only=offline, output_loading_info=True,
                ignore_mismatched_sizes=True,  # reported in info (we refuse them), not raised
            )  # fmt: skip
    except RuntimeError as err:
        raise CheckpointError(
            f"{where}: cannot load the weights into {cls.__name__} ({err})"
        ) from err
    _check_keys(model, info, where)
    return model.float().eval()  # weights may be stored in fp16; precision is chosen by autocast


def _check_keys(model: PreTrainedModel, info: dict, where: str) -> None:
    own = {name.split(".")[0] for name in model.state_dict()}
    unexpected = sorted(info["unexpected_keys"])
    head = [k for k in unexpected if k.split(".")[0] not in own]
    wrong = {
        "missing": sorted(info["missing_keys"]),
        "unexpected": [k for k in unexpected if k not in head],
        "mis-shaped": sorted(k if isinstance(k, str) else k[0] for k in info["mismatched_keys"]),
    }
    problems = [f"{kind} {keys[:8]}{' ...' if len(keys) > 8 else ''} ({len(keys)})"
                for kind, keys in wrong.items() if keys]  # fmt: skip
    if problems:
        raise CheckpointError(
            f"{where}: its weights do not fit {type(model).__name__}: {'; '.join(problems)}"
        )
    if head:
        log.info("%s: weights outside the encoder (a task head) not loaded: %s", where, head)


@contextmanager
def _report_off() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def project(encoder: PreTrainedModel, conv: torch.Tensor) -> torch.Tensor:
    """The feature projection ``(B, T, C) -> (B, T, D)``: the Transformer's input before its
    positional embedding (wav2vec 2.0's kin also return the normalised input; dropped)."""
    out = encoder.feature_projection(conv)
    return out[0] if isinstance(out, tuple) else out


@contextmanager
def exact_under_padding(encoder: PreTrainedModel, mask: torch.Tensor) -> Iterator[None]:
    """While ``encoder.encoder`` runs a zero-padded batch whose valid frames are ``mask (B, T)``,
    every valid frame gets what it gets alone. data2vec-audio's positional embedding is a stack
    of conv layers, each followed by a layer norm and GELU, which turn the padding's zeros into
    values the next conv layer would read into the last valid frames: they are zeroed after
    each layer, as an utterance alone is zero-padded. (HuBERT's, wav2vec 2.0's and WavLM's is
    one conv layer, whose padding the encoder zeroes itself: nothing to do.)"""
    keep = mask[:, None, :]  # the conv layers' outputs are (B, D, T)
    stack = getattr(encoder.encoder.pos_conv_embed, "layers", ())
    hooks = [layer.register_forward_hook(lambda _m, _in, out: out * keep) for layer in stack]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def untrained_copy(encoder: PreTrainedModel, seed: int) -> PreTrainedModel:
    """The same class and configuration, freshly initialised from ``seed``."""
    torch.manual_seed(seed)
    return type(encoder)(encoder.config).eval()


def model_type(encoder: PreTrainedModel) -> str:
    """The encoder's class as transformers names it (``hubert``, ``wavlm``...)."""
    return encoder.config.model_type
