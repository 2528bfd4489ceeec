"""Scoring a model's frozen upstreams (one per training seed of a student; one for the teacher
or a baseline): the probes over several probe seeds on each evaluated split, with each
utterance's errors kept for paired comparisons, and the model's efficiency. Each evaluated
model is its own DVC stage that calls :func:`score_upstreams`; a cheap last stage gathers them
into the report."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.config import check, non_negative, positive
from pipeline.core.device import check_device, resolve_device
from pipeline.corpus.manifest import Utterance
from pipeline.corpus.phonemes import normalize_text
from pipeline.evaluation.features import StackedBatches, write_stores
from pipeline.evaluation.probe import ProbeConfig, score, train_probes
from pipeline.evaluation.tasks import Reference, Task, tasks_for
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
        probe: the probes (phoneme recognition and ASR) and their references' phonemes.
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


@dataclass(frozen=True)
class ProbeData:
    """What the probes train and are scored on.

    Attributes:
        splits: the train split's and each scored split's utterances, by name.
        refs: every one's reference, by utterance id.
        tasks: the probes: ASR, and PR where every reference has phonemes.
    """

    splits: dict[str, list[Utterance]]
    refs: dict[str, Reference]
    tasks: list[Task]


def probe_data(cfg: EvaluateConfig, utts: list[Utterance]) -> ProbeData:
    """The probes' train utterances (``probe.train``, evenly thinned to ``train_utterances``)
    and each scored split's, transcribed ones only; every one's reference, its phonemes from
    ``probe.phonemes``; and the probes' tasks: ASR, and PR where every reference has phonemes.

    Raises:
        ValueError: a split or subset with no transcribed utterance (named).
        CorpusError: a word the phoneme lexicon lacks (named).
    """
    names = [cfg.probe.train, *cfg.splits]
    out = {name: [u for u in utts if u.belongs_to(name) and normalize_text(u.transcript)]
           for name in names}  # fmt: skip
    empty = [name for name, rows in out.items() if not rows]
    if empty:
        raise ValueError(f"no transcribed utterances in split or subset {empty[0]!r} of the "
                         "manifest (evaluate.splits, evaluate.probe.train)")  # fmt: skip
    train, keep = out[cfg.probe.train], cfg.probe.train_utterances
    if keep and len(train) > keep:
        out[cfg.probe.train] = [train[int(i * len(train) / keep)] for i in range(keep)]
    phonemize = cfg.probe.phonemes.build()
    refs = {u.id: Reference(u.transcript, phonemize(u)) for rows in out.values() for u in rows}
    tasks = tasks_for(refs)
    if len(tasks) == 1:
        log.warning("not every utterance has phonemes (evaluate.probe.phonemes: %s): no PER",
                    cfg.probe.phonemes.kind)  # fmt: skip
    return ProbeData(out, refs, tasks)


def score_upstreams(
    upstreams: dict[int | None, Upstream],
    cfg: EvaluateConfig,
    data: ProbeData,
    manifest: Path,
) -> dict:
    """Probe each upstream ``cfg.probe.seeds`` times and score each split utterance by
    utterance; add the parameters, RTF and peak memory of the first.

    Args:
        upstreams: training seed -> the upstream trained with it (a student's seeds), or
            ``{None: upstream}`` for a model not trained here (the teacher, a baseline).

    Returns:
        The model's metrics: ``runs`` (each run's training and probe seed, and the metrics it
        scored: a student's ASR probe may run on some of its seeds only), per split and metric
        the mean over the runs that scored it and each one's rate, per split each utterance's
        tokens and each such run's errors (``utterances``), the probes' curves and layer
        weights.
    """
    device = resolve_device(cfg.device, "evaluate.device")
    torch.set_num_threads(cfg.threads)
    scored = [name for name in data.splits if name != cfg.probe.train]
    runs: list[dict] = []
    counts: dict[str, dict[str, dict]] = {name: {} for name in scored}
    curves, weights = {}, {}
    for train_seed, probe_seed, views, results in _probe_runs(upstreams, cfg, data, manifest,
                                                              device):  # fmt: skip
        label = f"probe {probe_seed}" if train_seed is None else \
            f"seed {train_seed} probe {probe_seed}"  # fmt: skip
        scored_metrics = sorted({m for metrics in results.values() for m in metrics})
        runs.append({"train_seed": train_seed, "probe_seed": probe_seed,
                     "metrics": scored_metrics})  # fmt: skip
        curves[label] = {task: [round(v, 4) for v in view["curve"]]
                         for task, view in views.items()}  # fmt: skip
        weights[label] = {task: [round(w, 4) for w in view["layer_weights"]]
                          for task, view in views.items()}  # fmt: skip
        for name, metrics in results.items():
            for metric, result in metrics.items():
                kept = counts[name].setdefault(metric, {"ids": result["ids"],
                                                        "tokens": result["tokens"],
                                                        "errors": []})  # fmt: skip
                kept["errors"].append(result["errors"])
    first = next(iter(upstreams.values()))
    return {
        "name": first.name,
        "kind": first.kind,
        "parameters": first.parameters,
        "runs": runs,
        "splits": {
            name: {m: _summary(c) for m, c in metrics.items()} for name, metrics in counts.items()
        },  # fmt: skip
        "utterances": {name: _utterances(metrics) for name, metrics in counts.items()},
        "probe_curves": curves,
        "layer_weights": weights,
        **efficiency(first, cfg.efficiency_seconds),
        "device": str(device),
    }


def _probe_runs(upstreams: dict[int | None, Upstream], cfg: EvaluateConfig, data: ProbeData,
                manifest: Path, device: torch.device):  # fmt: skip
    """``(training seed, probe seed, {task: curve and layer weights}, {split: per-metric
    counts})`` for each probe seed and upstream. Their features are computed first, in one
    pass over the audio, into scratch stores removed at the end; then, per probe seed, every
    upstream's probes learn together in one pass over the features per epoch (the linear PR
    probes of all of them as one stacked probe; the ASR probe on the first
    ``probe.asr.training_seeds`` of a student's seeds)."""
    for upstream in upstreams.values():
        if upstream.module is not None:
            upstream.module.to(device).eval()
    scratch = Path(cfg.work_dir) if cfg.work_dir else None
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    keys = list(upstreams)
    work = Path(tempfile.mkdtemp(prefix=f"hubert-kd-{upstreams[keys[0]].name}-", dir=scratch))
    stores = [work / f"seed-{key}" for key in keys]
    try:
        write_stores(upstreams, data.splits, manifest, dict(zip(keys, stores, strict=True)),
                     cfg.batch_seconds, cfg.feature_encoding, cfg.pad_seconds)  # fmt: skip
        probe = cfg.probe
        asr = min(probe.asr.training_seeds or len(keys), len(keys))
        plan = [(task, list(range(asr if task.recurrent else len(keys)))) for task in data.tasks]
        train_refs = {u.id: data.refs[u.id] for u in data.splits[probe.train]}
        train = StackedBatches(stores, probe.train, probe.batch_frames, cfg.pad_seconds)
        for seed in range(probe.seeds):
            probes = train_probes(lambda e, s=seed: train.epoch(s * 1_000 + e), train_refs, plan,
                                  train.shape, probe, seed, device)  # fmt: skip
            results = {}
            for split in data.splits:
                if split != probe.train:
                    test = StackedBatches(stores, split, probe.batch_frames, cfg.pad_seconds)
                    results[split] = score(probes, test.epoch(seed=None), data.refs, device)
            for i, key in enumerate(keys):
                views = {}
                for p in probes:
                    if i in p.indices(len(keys)):
                        at = p.indices(len(keys)).index(i)
                        views[p.task.name] = {
                            "curve": [epoch[at] for epoch in p.curve],
                            "layer_weights": p.model.layer_weights()[at],
                        }
                yield key, seed, views, {split: found[i] for split, found in results.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _summary(counts: dict) -> dict:
    """A metric over runs: the mean of the runs' rates, and each run's."""
    total = max(sum(counts["tokens"]), 1)
    rates = [round(sum(errors) / total, 6) for errors in counts["errors"]]
    return {"mean": round(sum(rates) / len(rates), 6), "runs": rates}


def _utterances(metrics: dict[str, dict]) -> dict:
    """Each utterance's reference tokens per metric and each run's errors: what a paired
    comparison of two models reads (:mod:`pipeline.evaluation.compare`)."""
    ids = next(iter(metrics.values()))["ids"]
    if any(c["ids"] != ids for c in metrics.values()):
        raise AssertionError("the probes scored different utterances")
    return {"ids": ids, "tokens": {m: c["tokens"] for m, c in metrics.items()},
            "errors": {m: c["errors"] for m, c in metrics.items()}}  # fmt: skip
