"""Cost of a K-student sweep from the cache vs K separate runs vs K runs with the teacher online,
and per student with each front end.

A HuBERT Base-size teacher (random weights, 500-cluster head) is cached once over demo-corpus
train utterances, with its conv features (int8); then K students (a beta grid of the `dkd_b4`
student in params.yaml, with a trainable conv stack that starts as the teacher's: `frontend:
conv`, since online batches carry no cached features) train for the same steps (1) side by
side in one `sweep` pass, (2) as K separate runs from the cache, (3) as K runs that run the
teacher on every batch instead of reading the cache. Then the same sweep with the front end
frozen and read from the cache (``frontend: cached``) and with the light ``fbank`` front end.
Goals: (1) <= 1.10 x (2); the frozen front end >= 4x cheaper per student than (3).

    .venv/bin/python bench/sweep_cost.py [--manifest data/manifest.jsonl] [--steps 10] [--k 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader
from transformers import HubertConfig, HubertModel

from pipeline.core.config import section
from pipeline.corpus.manifest import read_manifest
from pipeline.losses import LOSSES
from pipeline.nn.frames import FrameSpec
from pipeline.students import grid_students, parse_student
from pipeline.students.checkpoint import build_student
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.teacher.head import ClusterHead
from pipeline.teacher.sources import build_teacher, save_teacher
from pipeline.training.batches import Batch
from pipeline.training.cache_batches import CacheBatches
from pipeline.training.config import TrainConfig
from pipeline.training.trainee import Trainee
from stages import cache_teacher, train_student
from storage import open_cache, read_frontend

ROOT = Path(__file__).resolve().parents[1]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument("--utterances", type=int, default=48, help="train utterances used")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--k", type=int, default=3, help="students in the grid")
    args = parser.parse_args()
    os.environ["HUBERT_KD_NO_PROGRESS"] = "1"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(
        steps=args.steps, warmup_steps=1, checkpoint_every=0, log_every=args.steps
    )
    train_cfg = section(params, "train", TrainConfig)
    torch.set_num_threads(train_cfg.threads)
    betas = [1, 4, 8, 16, 32, 64][: args.k]
    base = params["students"]["dkd_b4"]  # with a trainable conv stack: online batches carry
    base = {**base, "model": {**base["model"], "frontend": "conv"}}  # no cached features
    raws = grid_students("dkd", base, {"losses.dkd.beta": betas})
    students = {name: parse_student(raw, name) for name, raw in raws.items()}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = Path(args.manifest)
        rows = [json.loads(line) for line in source.read_text().splitlines()]
        rows = [r for r in rows if r["split"] == "train"][: args.utterances]
        for r in rows:
            r["audio"] = str(source.parent / r["audio"])
        manifest = tmp / "manifest.jsonl"
        manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        torch.manual_seed(0)
        save_teacher(
            tmp / "teacher", HubertModel(HubertConfig()), ClusterHead(768, 256, 500, 0.1), {}
        )
        params["cache_teacher"]["teacher"]["source"] = f"hf:{tmp / 'teacher'}"
        params["cache_teacher"].update(features=["conv"], feature_encoding="int8")
        cache_cfg = section(params, "cache_teacher", CacheTeacherConfig)
        cache_s = timed(lambda: cache_teacher.run(cache_cfg, manifest, tmp / "cache"))

        def sweep() -> None:
            dirs = {n: tmp / "sweep" / n for n in students}
            train_student.run(students, train_cfg, manifest, tmp / "cache", dirs, tmp / "s.pt")

        def separate() -> None:
            for n, cfg in students.items():
                train_student.run(
                    {n: cfg}, train_cfg, manifest, tmp / "cache", {n: tmp / "one" / n}, tmp / "s.pt"
                )

        teacher = build_teacher(cache_cfg.teacher)
        header = open_cache(tmp / "cache").header
        frames = FrameSpec(tuple(header.frame_kernels), tuple(header.frame_strides))

        def online() -> None:
            utts = read_manifest(manifest)
            for cfg in students.values():
                dataset = CacheBatches(
                    tmp / "cache", utts, manifest, batch_seconds=train_cfg.batch_seconds,
                    seed=train_cfg.seed, shuffle=True, pool=train_cfg.shuffle_pool,
                )  # fmt: skip
                torch.manual_seed(train_cfg.seed)
                model = build_student(cfg, 500, frames, read_frontend(tmp / "cache"))
                losses = {n: LOSSES[n](c) for n, c in cfg.losses.items()}
                run = Trainee("online", model, losses, train_cfg, torch.device("cpu"))
                batches = iter(DataLoader(dataset, batch_size=None))
                for step in range(train_cfg.steps):
                    batch = next(batches)
                    wavs = [w[:n] for w, n in zip(batch.wav, batch.lengths.tolist(), strict=True)]
                    outputs = teacher.outputs(wavs)  # the teacher, online, instead of the cache
                    logits = torch.nn.utils.rnn.pad_sequence(
                        [o[0] for o in outputs], batch_first=True
                    )
                    targets = torch.nn.utils.rnn.pad_sequence(
                        [o[1] for o in outputs], batch_first=True
                    )
                    online = Batch(batch.ids, batch.wav, batch.lengths, targets, batch.frame_mask,
                                   logits)  # fmt: skip
                    run.step([(0, online)], step, float(online.num_frames))

        sweep_s, separate_s, online_s = timed(sweep), timed(separate), timed(online)
        variants = {}
        for frontend in ("cached", "fbank"):
            grid = {n: raw | {"model": {**raw["model"], "frontend": frontend}}
                    for n, raw in raws.items()}  # fmt: skip
            chosen = {n: parse_student(raw, n) for n, raw in grid.items()}
            dirs = {n: tmp / frontend / n for n in chosen}
            variants[frontend] = timed(
                lambda chosen=chosen, dirs=dirs: train_student.run(
                    chosen, train_cfg, manifest, tmp / "cache", dirs, tmp / "v.pt"
                )
            )

    k = len(students)
    print(
        f"{len(rows)} utterances; K={k} students x {args.steps} steps; threads={train_cfg.threads}"
    )
    print(f"cache the teacher once (HuBERT Base size) : {cache_s:7.1f} s")
    print(f"sweep, one pass over the cache           : {sweep_s:7.1f} s")
    each = separate_s / k
    print(f"K separate runs from the cache           : {separate_s:7.1f} s  ({each:.1f} s each)")
    print(f"K runs with the teacher online           : {online_s:7.1f} s")
    print(f"sweep / (K x one run)                    : {sweep_s / separate_s:7.3f}  (goal <= 1.10)")
    print(f"online teacher / cached sweep            : {online_s / sweep_s:7.2f}x")
    print("per student (sweep time / K):")
    per = {"teacher online, trainable conv": online_s / k, "cache, trainable conv": sweep_s / k}
    per |= {f"cache, frontend: {f}": v / k for f, v in variants.items()}
    for label, seconds in per.items():
        ratio = per["teacher online, trainable conv"] / seconds
        print(f"  {label:<36}: {seconds:7.2f} s  ({ratio:5.2f}x cheaper than online)")
    print("goal: frontend: cached >= 4x cheaper than online")


if __name__ == "__main__":
    main()
