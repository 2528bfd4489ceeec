"""Teacher settings: which checkpoint, which logits and targets, and where it runs."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.config import FieldError, check
from pipeline.core.device import check_device, check_precision
from pipeline.teacher.kmeans import LOGIT_KINDS


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
    device: ``cpu``, ``cuda`` or ``cuda:<index>``.
    precision: ``fp32``, or ``bf16``/``fp16`` autocast (CUDA only).
    random: the random teacher's size; needed (and read) only with ``source: random``.
    kmeans: the k-means model; needed (and read) only when logits or targets use it.
    """

    source: str
    logits: str
    targets: str
    trust_checkpoint: bool
    device: str
    precision: str
    random: RandomTeacherConfig | None = None
    kmeans: KMeansConfig | None = None

    def __post_init__(self) -> None:
        kind = self.source.split(":", 1)[0]
        if self.source != "random" and (kind not in ("hf", "fairseq") or ":" not in self.source):
            raise FieldError(
                "source", f"{self.source!r}: use random, hf:<id or dir> or fairseq:<path>"
            )
        check(self.logits in ("head", "kmeans"), "logits", f"head or kmeans, not {self.logits!r}")
        check(self.targets in ("argmax", "kmeans"), "targets",
              f"argmax or kmeans, not {self.targets!r}")  # fmt: skip
        check_precision(self.precision)
        check_device(self.device)
        if self.random is None and self.source == "random":
            raise FieldError("random", "needed with source: random (the untrained teacher's size)")
        if self.kmeans is None and self.uses_kmeans:
            raise FieldError("kmeans", "needed when logits or targets is kmeans")

    @property
    def uses_kmeans(self) -> bool:
        return "kmeans" in (self.logits, self.targets)
