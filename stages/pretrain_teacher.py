"""`pipeline pretrain-teacher`: HuBERT first-iteration pre-training of a small HuBERT on a
manifest, through the one training loop, written as a teacher directory usable as ``hf:<dir>``
(see ``pipeline.teacher.sources``)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline.audio.features import FEATURE_DESCRIPTION
from pipeline.core.config import to_dict
from pipeline.core.io import atomic_dir, check_replaceable
from pipeline.core.locks import output_lock
from pipeline.corpus.manifest import corpus_fingerprint, read_manifest
from pipeline.losses.masked import Masked, MaskedConfig
from pipeline.pretraining.hubert import (
    MaskedPredictor,
    PretrainConfig,
    batches,
    evaluate,
    load_batch,
    mfcc_targets,
)
from pipeline.teacher.sources import save_teacher, small_hubert
from pipeline.training import distributed
from pipeline.training.epochs import single
from pipeline.training.loop import train
from pipeline.training.trainee import Trainee

log = logging.getLogger(__name__)

CENTROIDS = "mfcc_kmeans.safetensors"
STATE = "pretrain_state.pt"


def run(cfg: PretrainConfig, manifest: Path, out: Path) -> dict:
    """Fit MFCC k-means on the train split, pre-train ``cfg.model``, and write the teacher
    directory ``out`` (fp16 weights, cluster head, the k-means centroids, the curve and
    ``teacher.json`` with provenance and the held-out agreement with the MFCC labels). A killed
    run resumes from its last checkpoint in ``<out>.work/``; ``out`` only appears, complete, at
    the end, and only replaces an earlier teacher directory written by this command.

    Raises:
        OutputError: ``out`` holds other data, or another run writes it.
    """
    check_replaceable(out, "teacher")
    started = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    with output_lock(out):
        train_utts, dev_utts = read_manifest(manifest, "train"), read_manifest(manifest, "dev")
        if not train_utts or not dev_utts:
            raise ValueError(f"{manifest}: pre-training needs train and dev utterances")
        model = MaskedPredictor(*small_hubert(cfg.model), cfg.mask_prob, cfg.mask_length)
        targets = mfcc_targets(cfg, model.frames, train_utts, dev_utts, manifest)
        device = distributed.setup(cfg.device, "pretrain_teacher.device")
        loss = Masked(MaskedConfig(weight=1.0, unmasked_weight=cfg.unmasked_weight))
        run_ = Trainee("teacher", model, {"masked": loss}, cfg, device)

        def epoch(e: int, skip: int):
            groups = list(batches(targets.train, cfg.batch_seconds, e, cfg.seed))[skip:]
            return (load_batch(group, manifest) for group in groups)

        work = out.with_name(f"{out.name}.work")
        about = {"cfg": to_dict(cfg), "corpus": corpus_fingerprint(train_utts)}
        summary = train([run_], {run_.seed: single(epoch)}, cfg, work / STATE, about,
                        description="pre-train")  # fmt: skip
        model.cpu()
        scores = evaluate(model, targets.dev, manifest, cfg.batch_seconds, seed=cfg.model.seed + 1)
        log.info("dev agreement with MFCC k-means: masked %.3f, unmasked %.3f (majority %.3f)",
                 scores["masked_accuracy"], scores["unmasked_accuracy"],
                 scores["majority_class_rate"])  # fmt: skip
        meta = _provenance(cfg, run_.curve, scores, summary, targets.fit_frames, manifest,
                           train_utts)  # fmt: skip
        with atomic_dir(out, kind="teacher") as tmp:
            save_teacher(tmp, model.encoder.half(), model.head.half(), meta)
            save_file({"centroids": torch.from_numpy(targets.centroids)}, tmp / CENTROIDS)
            (tmp / "curve.json").write_text(json.dumps(run_.curve) + "\n")
        (work / STATE).unlink(missing_ok=True)
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()
    total = time.perf_counter() - started
    log.info("pre-training took %.1f min (%s)", total / 60, out)
    return {**meta["pretraining"], "total_seconds": round(total, 1)}


def _provenance(cfg, curve, scores, summary, fit_frames, manifest, train_utts) -> dict:
    """What ``teacher.json`` records of how the teacher was made."""
    last = curve[-1]
    return {
        "pretraining": {
            "recipe": "HuBERT iteration 1: masked prediction of MFCC k-means clusters",
            "targets": FEATURE_DESCRIPTION,
            "kmeans": {"num_clusters": cfg.model.num_classes, "seed": cfg.model.seed,
                       "fit_frames": fit_frames, "centroids": CENTROIDS},
            "config": asdict(cfg),
            "init_seed": cfg.model.seed,
            f"train_loss_last{cfg.log_every}": last["loss"],
            f"train_accuracy_last{cfg.log_every}": last["accuracy"],
            "dev": scores,
            "train_seconds": summary["seconds"],
            "threads": cfg.threads,
        },
        "corpus": {"fingerprint": corpus_fingerprint(train_utts),  # the split it learnt from
                   "train_utterances": len(train_utts),
                   "train_hours": round(sum(u.seconds for u in train_utts) / 3600, 4)},
    }  # fmt: skip
