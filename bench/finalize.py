"""Finalizing a cache costs O(parts), not O(bytes): the same parts, 1x and 8x the data.

Writes two caches part by part through the storage API, with the demo cache's fields (the
demo teacher's C = 100 logits in fp16 and its conv, layer_2 and layer_4 features in int8) and
its shape (3 parts, 480 utterances of about 137 frames): one of the demo's size, one with 8
times the utterances (fresh random data, so 8x the bytes on disk; the same number of parts).
Times ``finalize`` on each (median of several runs) and prints both, their ratio (goal <= 1.5x)
and the bytes.

    .venv/bin/python bench/finalize.py [--parts 3] [--utterances 480] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from storage import CacheHeader, finalize, open_part, prepare_location
from storage.features import encode_feature
from storage.header import SCHEMA_VERSION
from storage.location import files
from storage.zarr_store import ZarrConfig

FEATURES = {"conv": 128, "layer_2": 256, "layer_4": 256}


def header() -> CacheHeader:
    return CacheHeader(
        schema_version=SCHEMA_VERSION, backend="zarr", teacher="bench", fingerprint="f" * 64,
        corpus="c" * 64, num_classes=100, frame_rate=50.0, frame_kernels=[10, 3, 3, 3, 3, 2, 2],
        frame_strides=[5, 2, 2, 2, 2, 2, 2], codec={"name": "full", "dtype": "float16"},
        target_source="argmax",
        features={n: {"dim": d, "encoding": "int8"} for n, d in FEATURES.items()},
    )  # fmt: skip


def build(path: Path, parts: int, utterances: int, copies: int) -> list[str]:
    """A cache of ``parts`` parts holding ``copies`` x ``utterances`` utterances."""
    rng = np.random.default_rng(0)
    prepare_location(path)
    names = [f"part-{i}" for i in range(parts)]
    per_part = utterances // parts
    for name in names:
        with open_part(path, name, header(), ZarrConfig(4096, 3)) as part:
            for u in range(per_part * copies):
                n = int(rng.integers(80, 200))
                logits = rng.normal(size=(n, 100)).astype(np.float32)
                fields = {"targets": logits.argmax(1).astype(np.int32),
                          "logits": logits.astype(np.float16)}  # fmt: skip
                for feat, dim in FEATURES.items():
                    x = rng.normal(size=(n, dim)).astype(np.float32)
                    fields.update(encode_feature(feat, x, "int8"))
                part.write(f"{name}-u{u}", fields)
    return names


def timed_finalize(path: Path, names: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        finalize(path, header(), names, b"frontend")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=3)
    parser.add_argument("--utterances", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for copies in (1, 8):
            path = Path(tmp) / f"x{copies}"
            names = build(path, args.parts, args.utterances, copies)
            size = sum(files(path).values())
            results[copies] = (timed_finalize(path, names, args.repeats), size)
    for copies, (seconds, size) in results.items():
        print(f"{copies}x data: {args.parts} parts, {size / 2**20:7.1f} MiB, "
              f"finalize {1000 * seconds:7.2f} ms (median of {args.repeats})")  # fmt: skip
    ratio = results[8][0] / results[1][0]
    print(f"8x the bytes, same parts: finalize takes {ratio:.2f}x as long (goal <= 1.5x)")


if __name__ == "__main__":
    main()
