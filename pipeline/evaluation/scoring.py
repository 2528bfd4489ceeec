"""Scoring one frozen upstream: the ASR probe over several seeds on each evaluated split, and
its efficiency. Each evaluated model (teacher, baseline, student) is its own DVC stage that
calls :func:`score_upstream`; a cheap last stage gathers them into the report."""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.config import check, non_negative, positive
from pipeline.core.device import check_device, resolve_device
from pipeline.corpus.manifest import Utterance
from pipeline.evaluation.features import StoreBatches, write_store
from pipeline.evaluation.probe import ProbeConfig, Reference, score, train_probe
from pipeline.evaluation.upstream import Upstream, efficiency
from storage.features import FEATURE_ENCODINGS

log = logging.getLogger(__name__)

BASELINES = ("fbank", "random_teacher")


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` section of params.yaml.

    Attributes:
        splits: the splits or subsets scored, each reported on its own (``test``; for
            LibriSpeech ``dev-clean``, ``test-clean``, ``test-other``, as SUPERB reports them).
        batch_seconds: audio per upstream forward.
        pad_seconds: each batch (of audio, then of probe frames) is padded to a multiple of
            this, so a corpus gives few distinct batch shapes and the memory that torch's
            kernels keep per shape stays bounded (0: pad to the batch's longest only).
        threads: torch intra-op threads.
        device: where upstreams and the probe run (``cpu``, ``cuda``).
        baselines: extra rows: ``fbank`` (log-mel features in the same probe) and
            ``random_teacher`` (the teacher's architecture, untrained).
        efficiency_seconds: audio length of the real-time-factor and memory measurement.
        feature_encoding: how probe features are stored between the upstream and the probe
            (``float16``, or ``int8`` with a per-frame scale: half the disk).
        probe: the ASR probe.
        work_dir: the scratch folder for the probe features while a model is scored (removed
            afterwards; their size is logged before they are written); "" is the system's temp
            folder (``$TMPDIR``).
    """

    splits: list[str]
    batch_seconds: float
    pad_seconds: float
    threads: int
    device: str
    baselines: list[str]
    efficiency_seconds: float
    feature_encoding: str
    probe: ProbeConfig
    work_dir: str = ""

    def __post_init__(self) -> None:
        check(bool(self.splits) and self.probe.train not in self.splits, "splits",
              f"name at least one split to score, not the probe's train split "
              f"({self.probe.train})")  # fmt: skip
        unknown = set(self.baselines) - set(BASELINES)
        check(not unknown, "baselines", f"unknown {sorted(unknown)}: choose from {BASELINES}")
        check(self.feature_encoding in FEATURE_ENCODINGS, "feature_encoding",
              f"must be one of {FEATURE_ENCODINGS}")  # fmt: skip
        check_device(self.device)
        positive(self, "batch_seconds", "threads", "efficiency_seconds")
        non_negative(self, "pad_seconds")


def probe_splits(cfg: EvaluateConfig, utts: list[Utterance]) -> dict[str, list[Utterance]]:
    """The probe's train utterances (``probe.train``, evenly thinned to ``train_utterances``)
    and each scored split's, transcribed ones only.

    Raises:
        ValueError: a split or subset with no transcribed utterance (named).
    """
    names = [cfg.probe.train, *cfg.splits]
    out = {name: [u for u in utts if u.belongs_to(name) and u.transcript] for name in names}
    empty = [name for name, rows in out.items() if not rows]
    if empty:
        raise ValueError(f"no transcribed utterances in split or subset {empty[0]!r} of the "
                         "manifest (evaluate.splits, evaluate.probe.train)")  # fmt: skip
    train, keep = out[cfg.probe.train], cfg.probe.train_utterances
    if keep and len(train) > keep:
        out[cfg.probe.train] = [train[int(i * len(train) / keep)] for i in range(keep)]
    return out


def score_upstream(
    upstream: Upstream,
    cfg: EvaluateConfig,
    splits: dict[str, list[Utterance]],
    manifest: Path,
    out: Path,
) -> dict:
    """Probe ``upstream`` ``cfg.probe.seeds`` times and score each split, plus its parameters,
    RTF and peak memory. ``out`` is where the caller writes these metrics; the probe features
    live in a folder of ``cfg.work_dir`` while it runs, removed at the end."""
    device = resolve_device(cfg.device, "evaluate.device")
    torch.set_num_threads(cfg.threads)
    if upstream.module is not None:
        upstream.module.to(device).eval()
    scratch = Path(cfg.work_dir) if cfg.work_dir else None
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"hubert-kd-{upstream.name}-", dir=scratch))
    try:
        write_store(upstream, splits, manifest, work, cfg.batch_seconds, cfg.feature_encoding,
                    cfg.pad_seconds)  # fmt: skip
        probe = _probe(cfg.probe, splits, work, device, cfg.pad_seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "name": upstream.name,
        "kind": upstream.kind,
        "parameters": upstream.parameters,
        **probe,
        **efficiency(upstream, cfg.efficiency_seconds),
        "device": str(device),
    }


def _probe(
    cfg: ProbeConfig, splits: dict[str, list[Utterance]], store: Path, device, pad_seconds: float
) -> dict:
    refs = {u.id: Reference(u.transcript, u.phonemes) for rows in splits.values() for u in rows}
    train = StoreBatches(store, cfg.train, cfg.batch_frames, pad_seconds)
    train_refs = {u.id: refs[u.id] for u in splits[cfg.train]}
    scored = [name for name in splits if name != cfg.train]
    runs, curves, weights = {name: [] for name in scored}, {}, []
    for seed in range(cfg.seeds):
        model, vocabs, curve = train_probe(
            lambda e, seed=seed: train.epoch(seed * 1_000 + e), train_refs, train.shape, cfg,
            seed, device,
        )  # fmt: skip
        curves[f"seed {seed}"] = [round(v, 4) for v in curve]
        weights.append([round(w, 4) for w in model.weights.softmax(0).tolist()])
        for name in scored:
            test = StoreBatches(store, name, cfg.batch_frames, pad_seconds).epoch(seed=None)
            runs[name].append(score(model, vocabs, test, refs, device))
    return {
        "splits": {name: _spread(results) for name, results in runs.items()},
        "probe_curves": curves,
        "layer_weights": weights,
    }


def _spread(results: list[dict[str, float]]) -> dict[str, dict]:
    """Per metric: the mean over seeds, the min and max, and every seed's value."""
    out = {}
    for key in results[0]:
        values = [r[key] for r in results]
        out[key] = {"mean": round(statistics.fmean(values), 4), "min": min(values),
                    "max": max(values), "seeds": values}  # fmt: skip
    return out
