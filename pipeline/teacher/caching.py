"""Stage one's machinery: its settings, the shard plan, the header, and one shard's inference.

The manifest is cut, in order, into shards at content-defined boundaries; each shard becomes
one part of the cache, named by a hash of everything its content depends on, so any job that
computes a shard writes the same part, and a resumed or re-planned run reuses exactly the
unchanged parts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from safetensors.torch import save as save_safetensors
from torch.utils.data import DataLoader, Dataset

from pipeline.audio.batching import length_batches
from pipeline.audio.files import SAMPLE_RATE, read_audio
from pipeline.audio.frames import FrameSpec
from pipeline.core.config import Choice, check, non_negative, positive
from pipeline.core.errors import AudioError, CheckpointError, ConfigError
from pipeline.corpus.manifest import Utterance, audio_path, corpus_fingerprint
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.conv import frontend_spec
from pipeline.teacher.model import Teacher
from pipeline.teacher.sources import build_teacher, teacher_info
from storage import BACKENDS, CacheHeader, open_part
from storage.codecs import CODECS, FEATURE_ENCODINGS, encode_feature
from storage.header import SCHEMA_VERSION
from storage.integrity import sha256_bytes, sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheTeacherConfig:
    """The `cache_teacher` section of params.yaml.

    Attributes:
        teacher: which teacher and head to run.
        backend: the cache backend and its settings: ``{kind: zarr, chunk_frames, zstd_level}``
            or ``{kind: webdataset, shard_utterances}``.
        codec: how logits are stored: ``{kind: full, dtype}`` or ``{kind: topk, k}``.
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

    def __post_init__(self) -> None:
        positive(self, "shard_utterances", "threads")
        non_negative(self, "batch_seconds", "loader_workers")
        check(self.feature_encoding in FEATURE_ENCODINGS, "feature_encoding",
              f"must be one of {FEATURE_ENCODINGS}")  # fmt: skip


@dataclass(frozen=True)
class Shard:
    """One unit of stage one: utterances in manifest order and the part they become."""

    name: str
    utts: list[Utterance]


def load_teacher(cfg: TeacherConfig, utts: list[Utterance], manifest: Path) -> Teacher:
    """The configured teacher, its k-means fitted on evenly spaced train utterances if needed;
    warns when a pre-trained teacher was trained on another corpus."""

    def fit_audio():
        train = [u for u in utts if u.split == "train"] or utts
        step = max(1, len(train) // cfg.kmeans.fit_utterances)
        chosen = train[::step][: cfg.kmeans.fit_utterances]
        return (read_audio(audio_path(u, manifest)) for u in chosen)

    trained_on = teacher_info(cfg.source).get("corpus", {}).get("fingerprint")
    if trained_on and trained_on != corpus_fingerprint(utts):
        log.warning(
            "%s was pre-trained on another corpus (fingerprint %s...) than %s (%s...). If this is "
            "the demo corpus, its generator has changed: re-run `pipeline pretrain-teacher` "
            "(README) to match it.",
            cfg.source, trained_on[:12], manifest, corpus_fingerprint(utts)[:12],
        )  # fmt: skip
    return build_teacher(cfg, fit_audio if cfg.uses_kmeans else None)


def cache_header(teacher: Teacher, cfg: CacheTeacherConfig, manifest: Path) -> CacheHeader:
    """The header of the cache this teacher and these settings make (before any part)."""
    names = teacher.feature_names()
    unknown = [f for f in cfg.features if f not in names]
    if unknown:
        raise ConfigError(
            f"cache_teacher.features: {unknown} not features of this teacher; choose from {names}"
        )
    hcfg = teacher.encoder.config
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
        codec=cfg.codec.build().header(),
        target_source=teacher.target_source,
        frontend={**frontend_spec(hcfg), "normalize": teacher.normalize},
        features=features,
    )


def frontend_bytes(teacher: Teacher) -> bytes:
    """The teacher's conv stack weights, as stored beside the parts (``frontend.safetensors``)."""
    state = teacher.encoder.feature_extractor.state_dict()
    return save_safetensors({k: v.detach().cpu().contiguous() for k, v in state.items()})


def plan_shards(utts: list[Utterance], cfg: CacheTeacherConfig, header: CacheHeader) -> list[Shard]:
    """Cut the manifest (in order) into shards of about ``shard_utterances`` at content-defined
    boundaries: a shard ends after an utterance whose id hashes to a cut (probability 2/size)
    once it holds size/2, or at 2 x size. Removing or adding an utterance changes only its own
    shard (and rarely the next). Each shard's name hashes the header's content, the backend and
    batching settings and its utterances (id and audio), so it names exactly one part."""
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
        rows = "\n".join(f"{u.id}\t{u.audio}\t{u.samples}\t{u.sample_rate}" for u in group)
        name = "part-" + sha256_bytes(f"{settings}\n{rows}".encode())[:20]
        shards.append(Shard(name, group))
    return shards


@dataclass(frozen=True)
class TeacherRecipe:
    """What a worker process needs to load the very teacher the client loaded: its settings,
    the k-means centroids fitted in the client (if any) and the fingerprint to check."""

    cfg: TeacherConfig
    centroids: np.ndarray | None
    fingerprint: str

    @classmethod
    def of(cls, teacher: Teacher) -> TeacherRecipe:
        km = teacher.kmeans
        centroids = km.centroids.cpu().numpy() if km is not None else None
        return cls(teacher.cfg, centroids, teacher.fingerprint())


_LOADED: dict[str, Teacher] = {}  # per worker process: each recipe's teacher, loaded once


def teacher_from(recipe: TeacherRecipe) -> Teacher:
    """The recipe's teacher, loaded once per process (on its device: one GPU per worker).

    Raises:
        CheckpointError: this worker loads a teacher with other weights (another file).
    """
    if recipe.fingerprint not in _LOADED:
        teacher = build_teacher(recipe.cfg, centroids=recipe.centroids)
        if teacher.fingerprint() != recipe.fingerprint:
            raise CheckpointError(
                f"{recipe.cfg.source}: this worker loads a teacher other than the client's "
                "(another file at that path?); workers must see the same teacher"
            )
        _LOADED[recipe.fingerprint] = teacher
    return _LOADED[recipe.fingerprint]


class BatchAudio(Dataset):
    """Item ``i``: the 16 kHz waveforms of batch ``i`` (checked to give at least one frame)."""

    def __init__(self, batches: list[list[Utterance]], manifest: Path, frames: FrameSpec) -> None:
        self.batches = batches
        self.manifest = manifest
        self.frames = frames

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        wavs = []
        for utt in self.batches[i]:
            wav = read_audio(audio_path(utt, self.manifest))
            if self.frames.num_frames(len(wav)) < 1:
                raise AudioError(
                    f"{audio_path(utt, self.manifest)}: {len(wav)} samples at 16 kHz is too "
                    f"short for one teacher frame ({utt.id}); drop it from the corpus"
                )
            wavs.append(wav)
        return wavs


def run_shard(
    teacher: Teacher,
    cfg: CacheTeacherConfig,
    header: CacheHeader,
    shard: Shard,
    manifest: Path,
    cache: str | Path,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Run the teacher over one shard and commit it as its part of the cache at ``cache``.

    Loader workers decode audio ahead; each batch's logits and features are encoded on the
    teacher's device (top-k, int8) and only the encoded fields cross to the host, in one
    non-blocking copy into pinned memory; a writer thread waits for that copy and compresses
    and writes while the teacher runs the next batch. ``on_batch(utterances, frames)``
    reports progress. Returns the frames written.
    """
    torch.set_num_threads(cfg.threads)
    codec = cfg.codec.build()
    batches = length_batches(
        shard.utts, lambda u: u.seconds, cfg.batch_seconds, sort_key=lambda u: (u.seconds, u.id)
    )
    pinned = teacher.device.type == "cuda"
    loader = DataLoader(
        BatchAudio(batches, manifest, teacher.frames),
        batch_size=None,
        num_workers=cfg.loader_workers,
        prefetch_factor=4 if cfg.loader_workers else None,
        pin_memory=pinned,
    )

    def encode(wavs: list[torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[int], object]:
        logits, targets, feats, lengths = teacher.forward_batch(wavs, tuple(cfg.features))
        fields = {"targets": targets.int(), **codec.encode(logits, targets)}
        for name, x in feats.items():
            fields.update(encode_feature(name, x, cfg.feature_encoding))
        host = {k: v.to("cpu", non_blocking=pinned) for k, v in fields.items()}
        done = torch.cuda.Event() if pinned else None
        if done is not None:
            done.record()
        return host, lengths.tolist(), done

    def write(batch: list[Utterance], host: dict, lengths: list[int], done) -> None:
        if done is not None:
            done.synchronize()
        arrays = {k: v.numpy() for k, v in host.items()}
        for i, (utt, n) in enumerate(zip(batch, lengths, strict=True)):
            part.write(utt.id, {k: v[i, :n] for k, v in arrays.items()})

    frames = 0
    with open_part(cache, shard.name, header, cfg.backend.cfg) as part, ThreadPoolExecutor(1) as io:
        pending = None
        for batch, wavs in zip(batches, loader, strict=True):
            try:
                host, lengths, done = encode([w.to(teacher.device) for w in wavs])
            except ValueError as err:
                names = ", ".join(u.id for u in batch[:3]) + (" ..." if len(batch) > 3 else "")
                raise ValueError(f"{names}: {err}") from err
            if pending is not None:
                pending.result()  # keeps order and bounds memory to one batch in flight
            pending = io.submit(write, batch, host, lengths, done)
            frames += sum(lengths)
            if on_batch is not None:
                on_batch(len(batch), sum(lengths))
        if pending is not None:
            pending.result()
    return frames


def run_shard_on_worker(recipe: TeacherRecipe, *args) -> int:
    """:func:`run_shard` in a dask worker, with the teacher the recipe loads there."""
    return run_shard(teacher_from(recipe), *args)
