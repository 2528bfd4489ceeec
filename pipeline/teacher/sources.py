"""Loading a teacher from one source string, and teacher directories.

- ``random``: a small seeded, *untrained* HuBERT with a cluster head.
- ``hf:<hub id or local dir>``: the transformers speech encoder its ``config.json`` names
  (HuBERT, wav2vec 2.0, WavLM, data2vec-audio; see ``teacher.encoders``), loaded strictly; a
  local dir saved with :func:`save_teacher` also carries its cluster head.
- ``fairseq:<path.pt>``: a fairseq HuBERT checkpoint, head included (see ``teacher.fairseq``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from transformers import HubertConfig, HubertModel, PreTrainedModel

from pipeline.core.device import resolve_device
from pipeline.core.errors import CheckpointError
from pipeline.core.progress import quiet_transformers
from pipeline.teacher.config import RandomTeacherConfig, TeacherConfig
from pipeline.teacher.encoders import load_encoder, untrained_copy
from pipeline.teacher.fairseq import load_fairseq_hubert
from pipeline.teacher.head import ClusterHead
from pipeline.teacher.kmeans import load_centroids
from pipeline.teacher.model import Teacher

log = logging.getLogger(__name__)

HEAD_FILE = "cluster_head.safetensors"
TEACHER_FILE = "teacher.json"


def small_hubert(size: RandomTeacherConfig) -> tuple[HubertModel, ClusterHead]:
    """A freshly initialised (seeded) HuBERT of ``size``: layer-norm conv stack, pre-LN
    Transformer, cosine cluster head. The random teacher, and what pre-training starts from."""
    torch.manual_seed(size.seed)
    encoder = HubertModel(
        HubertConfig(
            hidden_size=size.hidden_size,
            num_hidden_layers=size.num_layers,
            num_attention_heads=size.num_heads,
            intermediate_size=size.intermediate_size,
            conv_dim=(size.conv_dim,) * 7,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            conv_bias=True,
        )
    )
    head = ClusterHead(size.hidden_size, size.proj_dim, size.num_classes, size.logit_temp)
    return encoder, head


def _random(cfg: TeacherConfig) -> tuple[PreTrainedModel, ClusterHead, bool, str]:
    encoder, head = small_hubert(cfg.random)
    return encoder, head, False, f"random HuBERT (untrained, seed {cfg.random.seed})"


def _hf(spec: str) -> tuple[PreTrainedModel, ClusterHead | None, bool, str]:
    local = Path(spec).expanduser()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        with quiet_transformers(local.is_dir()):  # a local load is quick: no bar between ours
            encoder = load_encoder(str(local) if local.is_dir() else spec, f"hf:{spec}", offline)
    except OSError as err:
        hint = "HF_HUB_OFFLINE=1 is set, so only the local cache was searched. " if offline else ""
        raise CheckpointError(
            f"hf:{spec}: cannot load the model ({err}). {hint}Without network access, fetch it "
            "on a connected machine (e.g. AutoModel.from_pretrained(id).save_pretrained(dir)) "
            "and use hf:<that dir>."
        ) from err
    head = load_head(local) if (local / HEAD_FILE).is_file() else None
    return encoder, head, _wants_normalized_audio(spec, local, offline), f"hf:{spec}"


def _wants_normalized_audio(spec: str, local: Path, offline: bool) -> bool:
    """Whether the model expects each waveform layer-normalised (HuBERT Large does): from
    ``teacher.json`` (our teacher dirs), else the feature extractor's ``do_normalize``."""
    if (local / TEACHER_FILE).is_file():
        return bool(json.loads((local / TEACHER_FILE).read_text()).get("normalize", False))
    from transformers import Wav2Vec2FeatureExtractor

    try:
        source = str(local) if local.is_dir() else spec
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(source, local_files_only=offline)
    except OSError:
        log.warning("hf:%s has no preprocessor config: waveforms are not normalised", spec)
        return False
    return bool(extractor.do_normalize)


def build_teacher(
    cfg: TeacherConfig, with_kmeans: bool = True, centroids: np.ndarray | None = None
) -> Teacher:
    """Load the configured teacher with its k-means head, where its logits or targets come from
    k-means: ready ``centroids``, or those of ``kmeans.path``. Centroids still to be fitted are
    stage one's (:mod:`pipeline.teacher.fitting`); until then the teacher gives no logits.
    ``with_kmeans=False``: the encoder and head only (e.g. to read its hidden states).

    Raises:
        CheckpointError: a source that cannot be loaded (named, with what to do).
    """
    kind, _, spec = cfg.source.partition(":")
    if kind == "random":
        encoder, head, normalize, description = _random(cfg)
    elif kind == "hf":
        encoder, head, normalize, description = _hf(spec)
    else:
        encoder, head, normalize = load_fairseq_hubert(Path(spec), cfg.trust_checkpoint)
        description = f"fairseq:{spec}"
    teacher = Teacher(encoder, head, normalize=normalize, description=description, cfg=cfg)
    teacher.to(resolve_device(cfg.device, "cache_teacher.teacher.device"))
    if cfg.uses_kmeans and with_kmeans:
        if centroids is None and cfg.kmeans.path:
            centroids = load_centroids(Path(cfg.kmeans.path), cfg.trust_checkpoint)
        if centroids is not None:
            teacher.use_kmeans(centroids)
    return teacher


def untrained_teacher(cfg: TeacherConfig, seed: int = 0) -> Teacher:
    """The configured teacher's architecture (the same class and configuration), freshly
    initialised from ``seed``: the ``random_teacher`` baseline, which shows what pre-training
    adds (its head, if any, is as untrained and unused)."""
    trained = build_teacher(cfg, with_kmeans=False)
    encoder = untrained_copy(trained.encoder, seed)
    if trained.head is not None:
        proj, hidden = trained.head.final_proj.weight.shape
        head = ClusterHead(hidden, proj, trained.head.num_classes, trained.head.logit_temp)
    else:
        head = ClusterHead(encoder.config.hidden_size, encoder.config.hidden_size, 2, 0.1)
    plain = (
        cfg
        if cfg.source == "random"
        else dataclasses.replace(cfg, logits="head", targets="argmax", kmeans=None)
    )
    description = f"untrained {trained.description} architecture (seed {seed})"
    teacher = Teacher(encoder, head, normalize=trained.normalize, description=description,
                      cfg=plain)  # fmt: skip
    return teacher.to(trained.device)


def save_teacher(
    directory: Path,
    encoder: PreTrainedModel,
    head: ClusterHead,
    meta: dict,
    normalize: bool = False,
) -> None:
    """Write a teacher directory: ``save_pretrained`` encoder + cluster head + ``teacher.json``
    (which also records whether the model expects layer-normalised waveforms)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    encoder.save_pretrained(directory)
    tensors = {k: v.contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, directory / HEAD_FILE)
    info = {"num_classes": head.num_classes, "proj_dim": head.label_embs.shape[1],
            "logit_temp": head.logit_temp, "head": "cosine", "normalize": normalize,
            **meta}  # fmt: skip
    (directory / TEACHER_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def teacher_info(source: str) -> dict:
    """``teacher.json`` of an ``hf:<dir>`` teacher written by :func:`save_teacher` ({} for any
    other source): cluster-head settings and, for pre-trained teachers, their provenance."""
    kind, _, spec = source.partition(":")
    info_file = Path(spec).expanduser() / TEACHER_FILE
    if kind != "hf" or not info_file.is_file():
        return {}
    return json.loads(info_file.read_text())


def load_head(directory: Path) -> ClusterHead:
    """The cluster head of a teacher directory written by :func:`save_teacher`."""
    from safetensors.torch import load_file

    info_file = Path(directory) / TEACHER_FILE
    if not info_file.is_file():
        raise CheckpointError(f"{directory}: {HEAD_FILE} without {TEACHER_FILE}")
    info = json.loads(info_file.read_text())
    tensors = load_file(Path(directory) / HEAD_FILE)
    hidden = tensors["final_proj.weight"].shape[1]
    head = ClusterHead(hidden, info["proj_dim"], info["num_classes"], info["logit_temp"])
    head.load_state_dict(tensors)
    return head
