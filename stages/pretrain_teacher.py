"""`pipeline pretrain-teacher`: HuBERT first-iteration pre-training of the random teacher's
architecture on a manifest, written as a teacher directory (see ``pipeline.teacher``)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from pipeline.audio.features import FEATURE_DESCRIPTION, mfcc_features
from pipeline.audio.files import read_audio
from pipeline.core.io import atomic_dir, atomic_file, check_replaceable, output_lock
from pipeline.core.progress import progress_bar
from pipeline.core.safe_load import load_weights
from pipeline.corpus.manifest import audio_path, corpus_fingerprint, read_manifest
from pipeline.teacher.config import RandomTeacherConfig
from pipeline.teacher.kmeans import fit_centroids
from pipeline.teacher.pretrain import (  # noqa: F401  (PretrainConfig: the CLI's section type)
    Example,
    MaskedPredictor,
    PretrainConfig,
    batches,
    evaluate,
    label_frames,
    load_batch,
    masked_loss,
    span_mask,
)
from pipeline.teacher.sources import save_teacher, small_hubert
from pipeline.training.loop import lr_factor

log = logging.getLogger(__name__)

CENTROIDS = "mfcc_kmeans.safetensors"
STATE = "pretrain_state.pt"


def _mfcc(utts, manifest: Path, frames, description: str, centroids: np.ndarray | None = None):
    """Per utterance, MFCC features ``(T, 39)``; or, given ``centroids``, only their cluster
    labels (int16), so labelling a large corpus never holds its features in memory."""
    out = []
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(utts), info="")
        for utt in utts:
            wav = read_audio(audio_path(utt, manifest))
            n = int(frames.num_frames(torch.tensor([len(wav)]))[0])
            feats = mfcc_features(wav, n).numpy()
            out.append(feats if centroids is None else label_frames([feats], centroids)[0].short())
            bar.update(task, advance=1)
    return out


def run(cfg: PretrainConfig, size: RandomTeacherConfig, manifest: Path, out: Path) -> dict:
    """Fit MFCC k-means on the train split, pre-train, and write the teacher directory ``out``
    (fp16 weights, cluster head, the k-means centroids and ``teacher.json`` with provenance and
    the held-out agreement with the MFCC labels). A killed run resumes from its last checkpoint
    in ``<out>.work/``; ``out`` only appears, complete, at the end, and only replaces an earlier
    teacher directory written by this command.

    Raises:
        OutputError: ``out`` holds other data, or another run writes it.
    """
    check_replaceable(out, "teacher")
    with output_lock(out):
        return _pretrain(cfg, size, manifest, out)


def _pretrain(cfg: PretrainConfig, size: RandomTeacherConfig, manifest: Path, out: Path) -> dict:
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    train_utts, dev_utts = read_manifest(manifest, "train"), read_manifest(manifest, "dev")
    if not train_utts or not dev_utts:
        raise ValueError(f"{manifest}: pre-training needs train and dev utterances")
    encoder, head = small_hubert(size)
    model = MaskedPredictor(encoder, head)

    picks = np.linspace(0, len(train_utts) - 1, min(cfg.kmeans_utterances, len(train_utts)))
    fit_utts = [train_utts[i] for i in sorted({int(i) for i in picks})]
    fit = np.concatenate(_mfcc(fit_utts, manifest, model.frames, "MFCC (k-means fit)"))
    log.info("fitting k-means (C=%d) on %d MFCC frames", size.num_classes, len(fit))
    centroids = fit_centroids(fit, size.num_classes, size.seed)

    def labelled(name: str, utts) -> list[Example]:
        labels = _mfcc(utts, manifest, model.frames, f"MFCC labels ({name})", centroids)
        return [Example(u, y) for u, y in zip(utts, labels, strict=True)]

    train_set, dev_set = labelled("train", train_utts), labelled("dev", dev_utts)

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps)
    )
    work = out.with_name(f"{out.name}.work")
    work.mkdir(parents=True, exist_ok=True)
    state_file = work / STATE
    identity = json.dumps(
        {"cfg": asdict(cfg), "size": asdict(size), "corpus": corpus_fingerprint(train_utts)},
        sort_keys=True,
    )
    step, epoch, index, curve = 0, 0, 0, []
    gen = torch.Generator().manual_seed(size.seed)
    if state_file.is_file():
        saved = load_weights(state_file, "pre-training state (delete it to start afresh)")
        if saved["identity"] == identity:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            gen.set_state(saved["generator"])
            torch.set_rng_state(saved["rng"])
            step, epoch, index, curve = (
                saved["step"],
                saved["epoch"],
                saved["index"],
                saved["curve"],
            )
            log.info("resuming pre-training from %s at step %d", state_file, step)
        else:
            log.warning("ignoring %s: it was made for other settings", state_file)

    model.train()
    loop_start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("pre-train", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            groups = list(batches(train_set, cfg.batch_seconds, epoch, size.seed))
            for group in groups[index:]:
                wav, lengths, labels = load_batch(group, manifest)
                mask = span_mask(
                    model.frames.num_frames(lengths), cfg.mask_prob, cfg.mask_length, gen
                )
                loss, accuracy = masked_loss(model, wav, lengths, labels, mask, cfg.unmasked_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                schedule.step()
                step, index = step + 1, index + 1
                curve.append({"step": step, "loss": loss.item(), "accuracy": accuracy.item()})
                bar.update(task, advance=1, info=f"loss {loss.item():.3f} acc {accuracy:.3f}")
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    with atomic_file(state_file) as tmp:
                        torch.save(
                            {"identity": identity, "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(),
                             "schedule": schedule.state_dict(), "generator": gen.get_state(),
                             "rng": torch.get_rng_state(), "step": step, "epoch": epoch,
                             "index": index, "curve": curve},
                            tmp,
                        )  # fmt: skip
                if step == cfg.steps:
                    break
            else:
                epoch, index = epoch + 1, 0
    train_seconds = time.perf_counter() - loop_start

    scores = evaluate(model, dev_set, manifest, cfg, seed=size.seed + 1)
    log.info(
        "dev agreement with MFCC k-means: masked %.3f, unmasked %.3f (majority class %.3f)",
        scores["masked_accuracy"], scores["unmasked_accuracy"], scores["majority_class_rate"],
    )  # fmt: skip
    tail = curve[-min(len(curve), 20) :]
    meta = {
        "pretraining": {
            "recipe": "HuBERT iteration 1: masked prediction of MFCC k-means clusters",
            "targets": FEATURE_DESCRIPTION,
            "kmeans": {"num_clusters": size.num_classes, "seed": size.seed,
                        "fit_frames": len(fit), "centroids": CENTROIDS},
            "config": asdict(cfg),
            "init_seed": size.seed,
            "train_loss_last20": sum(p["loss"] for p in tail) / len(tail),
            "train_accuracy_last20": sum(p["accuracy"] for p in tail) / len(tail),
            "dev": scores,
            "train_seconds": round(train_seconds, 1),
            "threads": cfg.threads,
        },
        "corpus": {"fingerprint": corpus_fingerprint(read_manifest(manifest)),
                   "train_utterances": len(train_utts),
                   "train_hours": round(sum(u.seconds for u in train_utts) / 3600, 4)},
    }  # fmt: skip
    with atomic_dir(out, kind="teacher") as tmp:
        save_teacher(tmp, model.encoder.half(), model.head.half(), meta)
        save_file({"centroids": torch.from_numpy(centroids)}, tmp / CENTROIDS)
        (tmp / "curve.json").write_text(json.dumps(curve) + "\n")
    state_file.unlink()
    if not any(work.iterdir()):
        work.rmdir()
    total = time.perf_counter() - started
    log.info("pre-training took %.1f min (%s)", total / 60, out)
    return {**meta["pretraining"], "total_seconds": round(total, 1)}
