"""The teacher: a HuBERT encoder plus cluster logits (its head or k-means), with exact batching.

Sources, chosen by one string:

- ``random``: a small seeded, *untrained* HuBERT with a cluster head (the offline placeholder).
- ``hf:<hub id or local dir>``: a transformers ``HubertModel``; a local dir saved with
  :func:`save_teacher` also carries its cluster head.
- ``fairseq:<path.pt>``: a fairseq HuBERT checkpoint, head included (see ``fairseq_hubert``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import HubertConfig, HubertModel

from pipeline.errors import CheckpointError
from pipeline.fairseq_hubert import load_fairseq_hubert
from pipeline.frames import FrameSpec, lengths_to_mask
from pipeline.frontend import conv_features, normalize_waveforms
from pipeline.head import ClusterHead
from pipeline.kmeans import LOGIT_KINDS, KMeansHead, fit_centroids, load_centroids
from pipeline.precision import autocast, check_device, check_precision, resolve_device

log = logging.getLogger(__name__)

# Layer outputs are captured with forward hooks on the (shared) encoder modules; threads that
# share a teacher (in-process dask workers) take turns so hooks never see another's forward.
_FORWARD_LOCK = threading.Lock()

HEAD_FILE = "cluster_head.safetensors"
TEACHER_FILE = "teacher.json"


@dataclass(frozen=True)
class RandomTeacherConfig:
    """The seeded random HuBERT (layer-norm conv stack, pre-LN Transformer) and its head."""

    seed: int
    num_classes: int
    logit_temp: float
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    conv_dim: int
    proj_dim: int


@dataclass(frozen=True)
class KMeansConfig:
    """Attributes:
    layer: transformer layer (1-based) whose output is clustered.
    num_clusters: C when fitting.
    path: an existing model (``.npy`` centroids, or a joblib/scikit-learn file, which needs
        ``trust_checkpoint``); "" fits one on the train split inside stage one.
    fit_utterances: train utterances (evenly spaced) used to fit.
    logits: ``distance`` (negative squared distance) or ``cosine``, over ``temperature``.
    temperature: divides the logits.
    seed: k-means seed.
    """

    layer: int
    num_clusters: int
    path: str
    fit_utterances: int
    logits: str
    temperature: float
    seed: int

    def __post_init__(self) -> None:
        if self.logits not in LOGIT_KINDS:
            raise ValueError(f"kmeans.logits must be one of {LOGIT_KINDS}")
        if min(self.layer, self.num_clusters, self.fit_utterances) < 1 or self.temperature <= 0:
            raise ValueError(
                "kmeans.layer, num_clusters, fit_utterances must be >= 1, temperature > 0"
            )


@dataclass(frozen=True)
class TeacherConfig:
    """Attributes:
    source: ``random``, ``hf:<hub id or dir>`` or ``fairseq:<path.pt>``.
    logits: ``head`` (the checkpoint's cluster head) or ``kmeans`` (centroids on a layer).
    targets: ``argmax`` of the logits, or ``kmeans`` labels (HuBERT's own targets).
    trust_checkpoint: allow unpickling checkpoints/k-means files that hold Python objects.
    device: ``cpu`` or ``cuda``.
    precision: ``fp32``, or ``bf16``/``fp16`` autocast (CUDA only).
    random: the random teacher's size.
    kmeans: the k-means model, when logits or targets use it.
    """

    source: str
    logits: str
    targets: str
    trust_checkpoint: bool
    device: str
    precision: str
    random: RandomTeacherConfig
    kmeans: KMeansConfig

    def __post_init__(self) -> None:
        kind = self.source.split(":", 1)[0]
        if self.source != "random" and (kind not in ("hf", "fairseq") or ":" not in self.source):
            raise ValueError(
                f"teacher source {self.source!r}: use random, hf:<id or dir> or fairseq:<path>"
            )
        if self.logits not in ("head", "kmeans") or self.targets not in ("argmax", "kmeans"):
            raise ValueError("teacher.logits must be head|kmeans and teacher.targets argmax|kmeans")
        check_precision(self.precision)
        check_device(self.device)

    @property
    def uses_kmeans(self) -> bool:
        return "kmeans" in (self.logits, self.targets)


class Teacher(nn.Module):
    """HuBERT encoder with cluster logits and per-frame targets, in eval mode.

    Attributes:
        description: provenance for the cache header.
        frames: the conv stack's frame arithmetic.
        target_source: how targets are made (for the cache header).
    """

    def __init__(
        self,
        encoder: HubertModel,
        head: ClusterHead | None,
        *,
        normalize: bool,
        description: str,
        cfg: TeacherConfig,
        kmeans: KMeansHead | None = None,
    ) -> None:
        super().__init__()
        if cfg.logits == "head" and head is None:
            raise CheckpointError(
                f"{cfg.source} has no cluster head: set cache_teacher.teacher.logits: kmeans"
            )
        self.encoder = encoder.eval()
        self.head = head.eval() if head is not None else None
        self.kmeans = kmeans
        self.cfg = cfg
        self.normalize = normalize
        self.description = description
        hcfg = encoder.config
        self.frames = FrameSpec(tuple(hcfg.conv_kernel), tuple(hcfg.conv_stride))
        # A group-norm conv stack normalises over time: padding would change its output.
        self.pad_waveforms = hcfg.feat_extract_norm == "layer"
        km = cfg.kmeans
        self.target_source = f"kmeans(layer={km.layer})" if cfg.targets == "kmeans" else "argmax"
        self.layer = km.layer if cfg.uses_kmeans else None
        if self.layer is not None and not 1 <= self.layer <= hcfg.num_hidden_layers:
            raise ValueError(f"kmeans.layer {self.layer} outside 1..{hcfg.num_hidden_layers}")

    @property
    def num_classes(self) -> int:
        return self.kmeans.num_classes if self.cfg.logits == "kmeans" else self.head.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @torch.inference_mode()
    def encode(self, wavs: list[torch.Tensor], layer: int | None = None):
        """Run the encoder exactly as on each utterance alone.

        Returns ``(final (B, T, D), layer output (B, T, D) or None, frame lengths (B,))``.
        Layer-norm conv stacks take zero-padded audio (frames never see padding); group-norm
        stacks run the conv stack per utterance. The Transformer always gets an attention mask.
        """
        lengths = torch.tensor([len(w) for w in wavs])
        final, layer_out, _, frame_lengths = self._run(
            pad_sequence(wavs, batch_first=True), lengths, layer
        )
        return final, layer_out, frame_lengths

    @torch.inference_mode()
    def hidden_states(self, wav: torch.Tensor, lengths: torch.Tensor):
        """Every layer for downstream use: ``[conv features, Transformer input, layer 1, ...,
        layer N]``, each ``(B, T, *)`` float32, and the frame lengths; layer N is the encoder's
        output (with the final layer norm of pre-LN models).

        ``wav (B, S)`` is zero-padded with sample ``lengths``; runs as :meth:`encode` does.
        """
        _, _, layers, frame_lengths = self._run(wav, lengths, all_layers=True)
        return layers, frame_lengths

    def _run(self, wav, lengths, layer: int | None = None, all_layers: bool = False):
        with _FORWARD_LOCK:
            return self._run_locked(wav, lengths, layer, all_layers)

    def _run_locked(self, wav, lengths, layer: int | None, all_layers: bool):
        device = self.device
        wav, lengths = wav.to(device), lengths.to(device)
        if self.normalize:
            wav = normalize_waveforms(wav, lengths)
        frame_lengths = self.frames.num_frames(lengths)
        blocks = self.encoder.encoder.layers
        captured: dict[int, torch.Tensor] = {}  # 0: the Transformer input, i: layer i's output

        def keep(index):
            def hook(_module, _inputs, output):
                captured[index] = output[0] if isinstance(output, tuple) else output

            return hook

        hooks = [
            blocks[0].register_forward_pre_hook(lambda _m, args: captured.update({0: args[0]}))
        ] if all_layers else []  # fmt: skip
        wanted = range(1, len(blocks) + 1) if all_layers else [layer] if layer is not None else []
        hooks += [blocks[i - 1].register_forward_hook(keep(i)) for i in wanted]
        try:
            with autocast(device, self.cfg.precision):
                fe = self.encoder.feature_extractor
                feats = conv_features(fe, wav, lengths, per_utterance=not self.pad_waveforms)
                mask = lengths_to_mask(frame_lengths, feats.shape[1])
                hidden = self.encoder.feature_projection(feats)
                final = self.encoder.encoder(hidden, attention_mask=mask).last_hidden_state
        finally:
            for hook in hooks:
                hook.remove()
        layers = None
        if all_layers:  # the last entry is the encoder's output (after a final layer norm)
            layers = [feats, *(captured[i] for i in range(len(blocks))), final]
            layers = [x.float() for x in layers]
        return final.float(), captured.get(layer), layers, frame_lengths

    def feature_names(self) -> list[str]:
        """Per-frame features :meth:`outputs` can return: ``conv`` (the conv stack's output,
        what a student's front end replaces) and ``layer_0`` (Transformer input) to
        ``layer_N`` (the final, layer-normed output)."""
        return ["conv"] + [f"layer_{i}" for i in range(self.encoder.config.num_hidden_layers + 1)]

    @torch.inference_mode()
    def outputs(
        self, wavs: list[torch.Tensor], features: tuple[str, ...] = ()
    ) -> list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]:
        """Per utterance: logits ``(frames_i, C)`` float32, targets ``(frames_i,)`` int64 and the
        requested ``features`` (see :meth:`feature_names`), each ``(frames_i, D)`` float32; CPU."""
        if self.cfg.uses_kmeans and self.kmeans is None:
            raise ValueError(
                "k-means logits or targets need a k-means model (build_teacher fits it)"
            )
        names = self.feature_names()
        unknown = [f for f in features if f not in names]
        if unknown:
            raise ValueError(f"unknown teacher features {unknown}: choose from {names}")
        lengths = torch.tensor([len(w) for w in wavs])
        final, layer_out, layers, frame_lengths = self._run(
            pad_sequence(wavs, batch_first=True), lengths, self.layer, all_layers=bool(features)
        )
        logits = self.kmeans(layer_out) if self.cfg.logits == "kmeans" else self.head(final.float())
        if self.cfg.targets == "kmeans":
            targets = self.kmeans.labels(layer_out)
        else:
            targets = logits.argmax(-1)
        chosen = {f: layers[names.index(f)] for f in features}
        return [
            (
                logits[i, :n].float().cpu(),
                targets[i, :n].cpu(),
                {f: x[i, :n].cpu() for f, x in chosen.items()},
            )
            for i, n in enumerate(frame_lengths.tolist())
        ]

    def logits(self, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-utterance logits only."""
        return [logits for logits, _, _ in self.outputs(wavs)]

    def fingerprint(self) -> str:
        """sha256 over every weight (encoder, head, k-means) and the logits/targets choices."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        km = self.cfg.kmeans
        choices = {
            "logits": self.cfg.logits,
            "targets": self.cfg.targets,
            "normalize": self.normalize,
            "logit_temp": self.head.logit_temp if self.head is not None else None,
            "kmeans": [km.layer, km.logits, km.temperature] if self.cfg.uses_kmeans else None,
        }
        digest.update(json.dumps(choices, sort_keys=True).encode())
        return digest.hexdigest()


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


def _random(cfg: TeacherConfig) -> tuple[HubertModel, ClusterHead, bool, str]:
    encoder, head = small_hubert(cfg.random)
    return encoder, head, False, f"random HuBERT (untrained, seed {cfg.random.seed})"


def _hf(spec: str) -> tuple[HubertModel, ClusterHead | None, bool, str]:
    local = Path(spec).expanduser()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        encoder = HubertModel.from_pretrained(
            str(local) if local.is_dir() else spec, local_files_only=offline
        ).float()  # weights may be stored in fp16; precision is chosen by autocast
    except OSError as err:
        hint = "HF_HUB_OFFLINE=1 is set, so only the local cache was searched. " if offline else ""
        raise CheckpointError(
            f"hf:{spec}: cannot load the model ({err}). {hint}Without network access, fetch it "
            "on a connected machine (e.g. HubertModel.from_pretrained(id).save_pretrained(dir)) "
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
    cfg: TeacherConfig,
    fit_audio: Callable[[], Iterable[torch.Tensor]] | None = None,
    with_kmeans: bool = True,
) -> Teacher:
    """Load the configured teacher; fit its k-means on ``fit_audio()`` waveforms if needed
    (``with_kmeans=False``: the encoder and head only, e.g. to read its hidden states).

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
        km = cfg.kmeans
        if km.path:
            centroids = load_centroids(Path(km.path), cfg.trust_checkpoint)
        else:
            if fit_audio is None:
                raise ValueError("fitting k-means needs audio")
            feats = [teacher.encode([w], km.layer)[1][0].cpu().numpy() for w in fit_audio()]
            centroids = fit_centroids(np.concatenate(feats), km.num_clusters, km.seed)
        teacher.kmeans = KMeansHead(torch.from_numpy(centroids), km.logits, km.temperature).to(
            teacher.device
        )
        if cfg.logits == "head" and teacher.kmeans.num_classes != teacher.head.num_classes:
            raise CheckpointError(
                f"k-means targets have {teacher.kmeans.num_classes} clusters but the head "
                f"predicts {teacher.head.num_classes}: they must match (kmeans.num_clusters)"
            )
    return teacher


def save_teacher(
    directory: Path, encoder: HubertModel, head: ClusterHead, meta: dict, normalize: bool = False
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
