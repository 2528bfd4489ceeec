"""Cache read throughput vs what a student consumes.

Reads every utterance of a cache in random order through the Reader protocol and decodes its
logits (what training does per utterance), printing frames/s for each backend x codec built from
the same teacher outputs; then times training steps of the configured student on the same
machine and prints the frames/s it consumes. Goal: reading >= 10x the student's consumption.

    .venv/bin/python bench/cache_read.py [--cache cache] [--student kd] [--steps 5]
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

from pipeline.frames import FrameSpec
from pipeline.losses import LOSSES
from pipeline.students import parse_students
from pipeline.students.checkpoint import build_student
from storage import BACKENDS, open_cache
from storage.codecs import CODECS, FullConfig, TopKConfig
from storage.wds_store import WdsConfig
from storage.zarr_store import ZarrConfig

ROOT = Path(__file__).resolve().parents[1]


def read_rate(path: Path) -> float:
    reader = open_cache(path)
    keys = reader.keys()
    random.Random(0).shuffle(keys)
    start, frames = time.perf_counter(), 0
    for key in keys:
        logits, targets = reader.header.decode(reader.read(key))
        frames += len(targets)
    return frames / (time.perf_counter() - start)


def student_rate(cache: Path, name: str, steps: int) -> float:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    student_cfg = parse_students(params)[name]
    header = open_cache(cache).header
    frames = FrameSpec(tuple(header.frame_kernels), tuple(header.frame_strides))
    model = build_student(student_cfg, header.num_classes, frames)
    losses = {n: LOSSES[n](c) for n, c in student_cfg.losses.items()}
    optimizer = torch.optim.AdamW(model.parameters())
    seconds = params["train"]["batch_seconds"]
    n_utts = max(1, int(seconds / 3))
    wav = 0.1 * torch.randn(n_utts, 48_000)
    lengths = torch.full((n_utts,), 48_000)
    t = frames.num_frames(48_000)
    teacher = torch.randn(n_utts, t, header.num_classes)
    targets, mask = teacher.argmax(-1), torch.ones(n_utts, t, dtype=torch.bool)
    start = time.perf_counter()
    for _ in range(steps):
        logits, _ = model(wav, lengths)
        total = sum(
            loss.cfg.weight * loss(logits, teacher, targets, mask)[n] for n, loss in losses.items()
        )
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    return steps * n_utts * t / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(ROOT / "cache"), help="a cache from `dvc repro`")
    parser.add_argument("--student", default="kd")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    source = open_cache(args.cache)
    classes = source.header.num_classes
    items = [(k, source.header.decode(source.read(k))) for k in source.keys()]
    frames = source.header.num_frames
    print(f"cache {args.cache}: {len(items)} utterances, {frames} frames, C={classes}")
    codecs = {
        "full-fp16": CODECS["full"](FullConfig("float16")),
        "topk-16": CODECS["topk"](TopKConfig(16)),
    }
    backends = {
        "zarr": ZarrConfig(chunk_frames=4096, zstd_level=3),
        "webdataset": WdsConfig(shard_utterances=200),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for backend, backend_cfg in backends.items():
            for codec_name, codec in codecs.items():
                header = source.header.__class__(
                    **{**source.header.to_json(), "codec": codec.header()}
                )
                out = Path(tmp) / f"{backend}-{codec_name}"
                with BACKENDS[backend](backend_cfg).writer(out, header) as writer:
                    for key, (logits, targets) in items:
                        writer.write(
                            key,
                            {"targets": targets.astype(np.int32), **codec.encode(logits, targets)},
                        )
                    writer.close()
                rate = read_rate(out)
                print(f"read + decode {backend:>10} {codec_name:>9}: {rate:>10,.0f} frames/s")
    rate = student_rate(Path(args.cache), args.student, args.steps)
    print(f"student {args.student!r} consumes  : {rate:>10,.0f} frames/s")


if __name__ == "__main__":
    main()
