"""Stage `evaluate`: the teacher, baselines and every student, side by side.

For each model: an ASR probe on its frozen layers (WER, CER, PER), agreement with the cached
teacher on held-out frames (students), parameters, real-time factor and peak memory. Writes
``metrics.json`` (DVC metrics), ``report.md`` and ``report.png``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from pipeline.audio.batching import length_batches
from pipeline.audio.files import read_audio
from pipeline.audio.frames import FrameSpec
from pipeline.core.config import positive
from pipeline.core.io import write_json
from pipeline.corpus.manifest import SPLITS, Utterance, audio_path, read_manifest
from pipeline.evaluation.agreement import teacher_agreement
from pipeline.evaluation.probe import ProbeConfig, Sample, train_and_score
from pipeline.evaluation.report import write_report
from pipeline.evaluation.upstream import Upstream, efficiency, fbank_layers
from pipeline.students.checkpoint import load_student
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.sources import build_teacher
from pipeline.training.stream import CacheBatches
from storage import CacheFormatError, open_cache

log = logging.getLogger(__name__)

METRICS = "metrics.json"
BASELINES = ("fbank", "random_teacher")


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` section of params.yaml.

    Attributes:
        split: held-out split to score (``dev`` or ``test``); the probe trains on ``train``.
        batch_seconds: audio per inference batch.
        threads: torch intra-op threads.
        baselines: extra rows: ``fbank`` (log-mel features in the same probe) and
            ``random_teacher`` (the untrained teacher of ``cache_teacher.teacher.random``'s size).
        efficiency_seconds: audio length of the real-time-factor and memory measurement.
        probe: the ASR probe.
    """

    split: str
    batch_seconds: float
    threads: int
    baselines: list[str]
    efficiency_seconds: float
    probe: ProbeConfig

    def __post_init__(self) -> None:
        if self.split not in SPLITS or self.split == "train":
            raise ValueError("split must be dev or test (the probe trains on train)")
        unknown = set(self.baselines) - set(BASELINES)
        if unknown:
            raise ValueError(f"unknown baselines {sorted(unknown)}: choose from {BASELINES}")
        positive(self, "batch_seconds", "threads", "efficiency_seconds")


def _upstreams(cfg: EvaluateConfig, teacher_cfg: TeacherConfig, frames: FrameSpec, students):
    """Loaders of the models to compare, in report order (each loaded only when its turn
    comes): the teacher, the baselines, the students."""

    def teacher(name: str, kind: str, source_cfg: TeacherConfig):
        def load() -> Upstream:
            model = build_teacher(source_cfg, with_kmeans=False)
            return Upstream(name, kind, model.hidden_states, model)

        return load

    yield teacher("teacher", "teacher", teacher_cfg)
    if "random_teacher" in cfg.baselines and teacher_cfg.source != "random":
        untrained = replace(teacher_cfg, source="random", logits="head", targets="argmax")
        yield teacher("random_teacher", "baseline", untrained)
    if "fbank" in cfg.baselines:
        yield lambda: Upstream("fbank", "baseline", fbank_layers(frames), None)
    for name, (model, _) in students.items():
        yield lambda name=name, model=model: Upstream(
            name, "student", model.extract_features, model
        )


def _samples(upstream: Upstream, utts: list[Utterance], manifest: Path, batch_seconds: float):
    """Frozen probe layers of each utterance (fp16, in manifest order)."""
    by_id = {}
    for group in length_batches(utts, lambda u: u.seconds, batch_seconds):
        wavs = [read_audio(audio_path(u, manifest)) for u in group]
        lengths = torch.tensor([len(w) for w in wavs])
        wav = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        layers, frame_lengths = upstream.probe_layers(wav, lengths)
        for i, (u, n) in enumerate(zip(group, frame_lengths.tolist(), strict=True)):
            by_id[u.id] = Sample(layers[i, :, :n].half().cpu(), u.transcript, u.phonemes)
    return [by_id[u.id] for u in utts]


def run(
    cfg: EvaluateConfig,
    teacher_cfg: TeacherConfig,
    manifest: Path,
    cache: Path,
    students: dict[str, Path],
    out_dir: Path,
) -> dict:
    """Evaluate the teacher, the baselines and ``students`` (name -> checkpoint file).

    Raises:
        CacheFormatError: a student trained on another teacher than the cache's.
        FileNotFoundError: a missing student checkpoint.
    """
    torch.set_num_threads(cfg.threads)
    reader = open_cache(cache)
    header = reader.header
    test = [u for u in read_manifest(manifest, split=cfg.split) if u.transcript]
    train = [u for u in read_manifest(manifest, split="train") if u.transcript]
    if not test or not train:
        raise ValueError(f"{manifest}: need transcribed train and {cfg.split} utterances")
    if cfg.probe.train_utterances and len(train) > cfg.probe.train_utterances:
        step = len(train) / cfg.probe.train_utterances
        train = [train[int(i * step)] for i in range(cfg.probe.train_utterances)]
    clash = sorted(set(students) & {"teacher", *BASELINES})
    if clash:
        raise ValueError(f"students {clash} share a name with a report row: rename them")
    missing = [f"{p} ({n})" for n, p in students.items() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"student checkpoints not found: {', '.join(missing)}; run train-student first"
        )
    loaded = {name: load_student(path) for name, path in students.items()}
    batches = CacheBatches(
        cache, test, manifest, batch_seconds=cfg.batch_seconds, seed=0, shuffle=False, pool=0
    )
    agreement = {}
    for name, (model, ckpt) in loaded.items():
        if ckpt["cache_fingerprint"] != header.fingerprint:
            raise CacheFormatError(
                f"{students[name]}: student {name!r} was trained on another teacher's cache"
            )
        if model.predicts_logits:  # feature-distillation students have no cluster logits
            agreement[name] = teacher_agreement(model, batches)

    frames = FrameSpec(tuple(header.frame_kernels), tuple(header.frame_strides))
    device = teacher_cfg.device
    models = {}
    for load in _upstreams(cfg, teacher_cfg, frames, loaded):
        upstream = load()
        if upstream.kind == "teacher" and upstream.module.description != header.teacher:
            log.warning(
                "cache_teacher.teacher is %s but the cache was made by %s: the teacher row "
                "describes the configured one", upstream.module.description, header.teacher,
            )  # fmt: skip
        if upstream.kind == "student":
            upstream.module.to("cpu")
        log.info("evaluating %s", upstream.name)
        scores = train_and_score(
            _samples(upstream, train, manifest, cfg.batch_seconds),
            _samples(upstream, test, manifest, cfg.batch_seconds),
            cfg.probe,
            upstream.name,
        )
        models[upstream.name] = {
            "kind": upstream.kind,
            "parameters": upstream.parameters,
            **scores,
            **agreement.get(upstream.name, {}),
            **efficiency(upstream, cfg.efficiency_seconds),
        }
        log.info("%s: %s", upstream.name, models[upstream.name])
    teacher_rtf = models["teacher"]["rtf"]
    for row in models.values():
        row["rtf_vs_teacher"] = round(row["rtf"] / teacher_rtf, 4) if teacher_rtf else None
    metrics = {
        "split": cfg.split,
        "teacher": header.teacher,
        "device": device,
        "efficiency_seconds": cfg.efficiency_seconds,
        "probe_train_utterances": len(train),
        "test_utterances": len(test),
        "models": models,
    }
    out_dir = Path(out_dir)
    write_json(out_dir / METRICS, metrics)
    write_report(metrics, out_dir)
    return metrics
