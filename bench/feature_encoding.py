"""Cached conv features as float16 vs int8: bytes per frame and the effect on a student trained
on them (`frontend: cached`).

Caches the demo corpus twice with the params.yaml teacher (conv features only, fp16 and int8),
trains the same cached-front-end student on each (same seed and steps), and prints bytes/frame
of the feature, the student's final training loss and its agreement with the teacher on the
test split (its exported, raw-audio form).

    .venv/bin/python bench/feature_encoding.py [--student dkd_b4] [--steps 150]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path

import torch

from pipeline.core.config import load_params, section
from pipeline.corpus.manifest import read_manifest
from pipeline.evaluation.agreement import teacher_agreement
from pipeline.students import parse_students
from pipeline.students.checkpoint import CHECKPOINT, load_student
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.training.cache_batches import CacheBatches
from pipeline.training.config import TrainConfig
from stages import cache_teacher, train_student
from storage import cache_summary

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument("--student", default="dkd_b4")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    os.environ["HUBERT_KD_NO_PROGRESS"] = "1"
    manifest = Path(args.manifest)
    params = load_params(ROOT / "params.yaml")
    train_cfg = dataclasses.replace(
        section(params, "train", TrainConfig), steps=args.steps, checkpoint_every=0
    )
    student = {args.student: parse_students(params)[args.student]}
    test = read_manifest(manifest, "test")
    print(f"student {args.student}, {args.steps} steps, seed {train_cfg.seed}")
    with tempfile.TemporaryDirectory() as tmp:
        for encoding in ("float16", "int8"):
            params["cache_teacher"].update(features=["conv"], feature_encoding=encoding)
            cfg = section(params, "cache_teacher", CacheTeacherConfig)
            cache = Path(tmp) / encoding / "cache"
            cache_teacher.run(cfg, manifest, cache)
            out = Path(tmp) / encoding / "student"
            result = train_student.run(
                student, train_cfg, manifest, cache, {args.student: out}, Path(tmp) / "s.pt"
            )[args.student]
            torch.manual_seed(0)
            model, _ = load_student(out / CHECKPOINT)
            batches = CacheBatches(cache, test, manifest, batch_seconds=60.0, seed=0,
                                   shuffle=False, pool=0)  # fmt: skip
            (agreement,) = teacher_agreement([model], batches)
            feature = cache_summary(cache)["features"]["conv"]
            print(
                f"  conv as {encoding:<7}: {feature:<28} final loss {result['final']['loss']:.4f}"
                f"  test top-1 {agreement['top1_agreement']:.4f}  KL {agreement['kl']:.4f}"
            )


if __name__ == "__main__":
    main()
