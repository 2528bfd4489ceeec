"""Cache read throughput vs what a student consumes.

For each backend x codec (stage one rerun on the same corpus, logits and targets only), prints
frames/s read and decoded when streaming block by block (the training path: each block's
logits decoded as one batch, as the student's device does) and with random access by
utterance id; then the training stream as a whole (cache + audio + batching + decoding,
``CacheBatches``) and the frames/s the configured student consumes in training steps on this
machine. Goal: reading >= 10x consumption.

    .venv/bin/python bench/cache_read.py [--cache cache] [--manifest data/manifest.jsonl]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline.core.config import section
from pipeline.corpus.manifest import read_manifest
from pipeline.losses import LOSSES
from pipeline.nn.frames import FrameSpec
from pipeline.students import parse_students
from pipeline.students.checkpoint import build_student
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.training.batches import Batch, teacher_decoder
from pipeline.training.cache_batches import CacheBatches
from pipeline.training.config import TrainConfig
from pipeline.training.trainee import Trainee
from stages import cache_teacher
from storage import open_cache, read_frontend

ROOT = Path(__file__).resolve().parents[1]


def read_rates(path: Path) -> tuple[float, float]:
    """(streamed, random-access) frames/s, reading and decoding every utterance once."""
    reader = open_cache(path)
    codec, fields_of = reader.codec, list(reader.codec.fields(reader.header.num_classes))
    start, frames = time.perf_counter(), 0
    for block in reader.blocks():
        rows = [fields for _, fields in reader.read_block(block)]
        joined = {k: np.concatenate([r[k] for r in rows]) for k in fields_of}
        frames += len(codec.decode(joined))
    streamed = frames / (time.perf_counter() - start)
    keys = reader.keys()
    random.Random(0).shuffle(keys)
    start = time.perf_counter()
    for key in keys:
        codec.decode(reader.read(key))
    return streamed, frames / (time.perf_counter() - start)


def stream_rate(cache: Path, manifest: Path) -> float:
    """Frames/s of the whole training stream: cache blocks + audio + length batches, the
    teacher logits decoded as training decodes them."""
    utts = read_manifest(manifest)
    dataset = CacheBatches(cache, utts, manifest, batch_seconds=16.0, seed=0, shuffle=True, pool=64)
    decode = teacher_decoder(dataset.codec, dataset.argmax_targets, torch.device("cpu"))
    start = time.perf_counter()
    frames = sum(decode(batch).num_frames for batch in dataset)
    return frames / (time.perf_counter() - start)


def student_rate(cache: Path, name: str, steps: int) -> float:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    model_cfg = params["students"][name]["model"]
    if model_cfg.get("frontend") == "cached":  # time its trainable form: the costliest per frame
        model_cfg["frontend"] = "conv"
    student_cfg = parse_students(params)[name]
    header = open_cache(cache).header
    frames = FrameSpec(tuple(header.frame_kernels), tuple(header.frame_strides))
    model = build_student(student_cfg, header.num_classes, frames, read_frontend(cache))
    losses = {n: LOSSES[n](c) for n, c in student_cfg.losses.items()}
    train_cfg = section(params, "train", TrainConfig)
    run = Trainee(name, model, losses, train_cfg, torch.device("cpu"))
    seconds = train_cfg.batch_seconds
    n_utts = max(1, int(seconds / 3))
    wav = 0.1 * torch.randn(n_utts, 48_000)
    lengths = torch.full((n_utts,), 48_000)
    t = frames.num_frames(48_000)
    teacher = torch.randn(n_utts, t, header.num_classes)
    targets, mask = teacher.argmax(-1), torch.ones(n_utts, t, dtype=torch.bool)
    batch = Batch([str(i) for i in range(n_utts)], wav, lengths, targets, mask, teacher)
    start = time.perf_counter()
    for step in range(steps):
        run.step([(0, batch)], step, float(batch.num_frames))
    return steps * n_utts * t / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(ROOT / "cache"), help="a cache from `dvc repro`")
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument("--student", default="kd")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    header = open_cache(args.cache).header
    print(f"cache {args.cache}: {header.num_utterances} utterances, {header.num_frames} frames, "
          f"C={header.num_classes}")  # fmt: skip
    codecs = {
        "full-fp16": {"kind": "full", "dtype": "float16"},
        "pq-62": {"kind": "pq", "bytes": 62},
    }
    backends = {
        "zarr": {"kind": "zarr", "chunk_frames": 4096, "zstd_level": 3},
        "webdataset": {"kind": "webdataset", "shard_utterances": 200},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for backend, backend_cfg in backends.items():
            for codec_name, codec in codecs.items():
                stage = dict(params["cache_teacher"], backend=backend_cfg, codec=codec, features=[])
                cfg = section({"cache_teacher": stage}, "cache_teacher", CacheTeacherConfig)
                out = Path(tmp) / f"{backend}-{codec_name}"
                cache_teacher.run(cfg, Path(args.manifest), out)
                streamed, random_access = read_rates(out)
                print(
                    f"read + decode {backend:>10} {codec_name:>9}: {streamed:>10,.0f} frames/s "
                    f"streamed, {random_access:>10,.0f} by random access"
                )
    rate = stream_rate(Path(args.cache), Path(args.manifest))
    print(f"training stream with audio   : {rate:>10,.0f} frames/s (CacheBatches, no workers)")
    rate = student_rate(Path(args.cache), args.student, args.steps)
    print(f"student {args.student!r} consumes     : {rate:>10,.0f} frames/s (trainable conv stack)")


if __name__ == "__main__":
    main()
