"""Stage one's machinery: its settings, the shard plan, the header, and one shard's inference.

The manifest is cut, in order, into shards at content-defined boundaries; each shard becomes
one part of the cache, named by a hash of everything its content depends on, so any job that
computes a shard writes the same part, and a resumed or re-planned run reuses exactly the
unchanged parts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from safetensors.torch import save as save_safetensors

from pipeline.audio.files import SAMPLE_RATE
from pipeline.core.config import Choice, check, non_negative, positive
from pipeline.core.errors import ConfigError
from pipeline.core.hashing import sha256_bytes, sha256_file
from pipeline.corpus.manifest import Utterance, corpus_fingerprint
from pipeline.nn.conv import frontend_spec
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.fitting import Fitted
from pipeline.teacher.model import Teacher
from pipeline.teacher.sources import build_teacher, teacher_info
from storage import BACKENDS, CacheHeader
from storage.codecs import CODECS
from storage.features import FEATURE_ENCODINGS
from storage.header import FITTED, SCHEMA_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheTeacherConfig:
    """The `cache_teacher` section of params.yaml.

    Attributes:
        teacher: which teacher and head to run.
        backend: the cache backend and its settings: ``{kind: zarr, chunk_frames, zstd_level}``
            or ``{kind: webdataset, shard_utterances}``.
        codec: how logits are stored: ``{kind: full, dtype}``, ``{kind: pq, bytes}`` or
            ``{kind: projection}`` (see ``storage.codecs``).
        features: teacher features cached per frame beside the logits: ``conv`` (the conv
            stack's output, for students with ``frontend: cached``) and ``layer_<i>``
            (Transformer layer i, 0 = its input; for feature-distillation students).
        feature_encoding: ``float16`` or ``int8`` (with a per-frame scale).
        shard_utterances: about this many utterances per shard: the unit of commit, resume
            and parallelism (one part of the cache each).
        scheduler: "" runs shards in this process; ``tcp://host:port`` maps them over that
            dask.distributed cluster (each worker writes its parts where the cache lives).
        batch_seconds: audio per inference batch (utterances are length-sorted first).
        threads: torch intra-op threads.
        loader_workers: processes decoding audio ahead of the teacher (0: in the main process).
        fit_utterances: train utterances (evenly spaced) a learned codec is fitted on (k-means
            centroids: ``teacher.kmeans.fit_utterances``); once for the whole cache.
        fit_seed: seed of the codec's fitting.
    """

    teacher: TeacherConfig
    backend: Annotated[Choice, BACKENDS]
    codec: Annotated[Choice, CODECS]
    features: list[str]
    feature_encoding: str
    shard_utterances: int
    scheduler: str
    batch_seconds: float
    threads: int
    loader_workers: int
    fit_utterances: int
    fit_seed: int

    def __post_init__(self) -> None:
        positive(self, "shard_utterances", "threads", "fit_utterances")
        non_negative(self, "batch_seconds", "loader_workers")
        check(self.feature_encoding in FEATURE_ENCODINGS, "feature_encoding",
              f"must be one of {FEATURE_ENCODINGS}")  # fmt: skip


@dataclass(frozen=True)
class Shard:
    """One unit of stage one: utterances in manifest order and the part they become."""

    name: str
    utts: list[Utterance]


def load_teacher(cfg: TeacherConfig, utts: list[Utterance], manifest: Path) -> Teacher:
    """The configured teacher (k-means centroids still to be fitted are attached by
    :func:`~pipeline.teacher.fitting.fitted_state`); warns when a pre-trained teacher was
    trained on another corpus (another train split than ``utts``')."""
    trained_on = teacher_info(cfg.source).get("corpus", {}).get("fingerprint")
    train = [u for u in utts if u.split == "train"]
    if trained_on and trained_on != corpus_fingerprint(train):
        log.warning(
            "%s was pre-trained on another corpus (fingerprint %s...) than %s (%s...). If this is "
            "the demo corpus, its generator has changed: re-run `pipeline pretrain-teacher` "
            "(README) to match it.",
            cfg.source, trained_on[:12], manifest, corpus_fingerprint(train)[:12],
        )  # fmt: skip
    return build_teacher(cfg)


def cache_header(
    teacher: Teacher, cfg: CacheTeacherConfig, manifest: Path, fitted: Fitted
) -> CacheHeader:
    """The header of the cache this teacher and these settings make (before any part), with
    the ``fitted`` codec (a learned one's layout and the digest of its constants)."""
    names = teacher.feature_names()
    unknown = [f for f in cfg.features if f not in names]
    if unknown:
        raise ConfigError(
            f"cache_teacher.features: {unknown} not features of this teacher; choose from {names}"
        )
    hcfg, stack = teacher.encoder.config, teacher.encoder.feature_extractor
    features = {
        f: {"dim": hcfg.conv_dim[-1] if f == "conv" else hcfg.hidden_size,
            "encoding": cfg.feature_encoding}
        for f in cfg.features
    }  # fmt: skip
    return CacheHeader(
        schema_version=SCHEMA_VERSION,
        backend=cfg.backend.kind,
        teacher=teacher.description,
        fingerprint=teacher.fingerprint(),
        corpus=sha256_file(manifest),
        num_classes=teacher.num_classes,
        frame_rate=teacher.frames.frame_rate(SAMPLE_RATE),
        frame_kernels=list(teacher.frames.kernels),
        frame_strides=list(teacher.frames.strides),
        codec={**fitted.codec.header(), **_constants(fitted)},
        target_source=teacher.target_source,
        frontend={**frontend_spec(stack), "normalize": teacher.normalize},
        features=features,
        teacher_class=teacher.model_type,
    )


def _constants(fitted: Fitted) -> dict[str, str]:
    return {"constants": fitted.checksums[FITTED]} if fitted.codec.learned else {}


def frontend_bytes(teacher: Teacher) -> bytes:
    """The teacher's conv stack weights, as stored beside the parts (``frontend.safetensors``)."""
    state = teacher.encoder.feature_extractor.state_dict()
    return save_safetensors({k: v.detach().cpu().contiguous() for k, v in state.items()})


def plan_shards(utts: list[Utterance], cfg: CacheTeacherConfig, header: CacheHeader) -> list[Shard]:
    """Cut the manifest (in order) into shards of about ``shard_utterances`` at content-defined
    boundaries: a shard ends after an utterance whose id hashes to a cut (probability 2/size)
    once it holds size/2, or at 2 x size. Removing or adding an utterance changes only its own
    shard (and rarely the next). Each shard's name hashes the header's content, the backend and
    batching settings and its utterances (id, length and the audio's sha256, or its path where
    the manifest has no sha256), so it names exactly one part: audio fixed in place renames its
    part, and a corpus under another root (or beside another subset) renames none."""
    size = cfg.shard_utterances
    settings = json.dumps(
        {"header": header.content(), "backend": repr(cfg.backend.cfg),
         "batch_seconds": cfg.batch_seconds, "device": cfg.teacher.device,
         "precision": cfg.teacher.precision},
        sort_keys=True,
    )  # fmt: skip
    groups, current = [], []
    for utt in utts:
        current.append(utt)
        cut = int(sha256_bytes(utt.id.encode())[:12], 16) % size < 2
        if (len(current) >= max(1, (size + 1) // 2) and cut) or len(current) >= 2 * size:
            groups.append(current)
            current = []
    groups += [current] if current else []
    shards = []
    for group in groups:
        rows = "\n".join(f"{u.id}\t{u.sha256 or u.audio.path.as_posix()}\t{u.samples}\t"
                         f"{u.sample_rate}" for u in group)  # fmt: skip
        name = "part-" + sha256_bytes(f"{settings}\n{rows}".encode())[:20]
        shards.append(Shard(name, group))
    return shards
