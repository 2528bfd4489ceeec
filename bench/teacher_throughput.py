"""Stage-one throughput vs a bare HubertModel forward, for a HuBERT Base-size teacher.

Builds a random-weight HuBERT Base (group-norm conv stack, 12 x 768) with a 500-cluster head as
a teacher directory, writes synthetic 16 kHz utterances and a manifest, then times on the same
audio: (1) a bare ``HubertModel`` forward, one utterance at a time (exact for group norm);
(2) the whole ``cache-teacher`` stage (audio reading, batched exact inference, head, zarr
writes). Prints seconds of audio per second for both and the overhead ratio (goal <= 1.10).

    .venv/bin/python bench/teacher_throughput.py [--utterances 8] [--seconds 6] [--device cpu]
        [--logits-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml
from transformers import HubertConfig, HubertModel

from pipeline.core.config import section
from pipeline.core.device import autocast
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.teacher.head import ClusterHead
from pipeline.teacher.sources import build_teacher, save_teacher
from stages import cache_teacher

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0, help="mean utterance length")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=3, help="timings keep the fastest run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-seconds", type=float, default=None, help="default: params.yaml")
    parser.add_argument("--loader-workers", type=int, default=None, help="default: params.yaml")
    parser.add_argument(
        "--logits-only", action="store_true", help="no teacher features (the paper's cache)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["HUBERT_KD_NO_PROGRESS"] = "1"

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        encoder = HubertModel(HubertConfig()).eval()  # HuBERT Base: group norm, 12 x 768
        save_teacher(tmp / "teacher", encoder, ClusterHead(768, 256, 500, 0.1), {"note": "bench"})
        rng = np.random.default_rng(0)
        rows, wavs = [], []
        for i in range(args.utterances):
            n = int(16_000 * args.seconds * rng.uniform(0.7, 1.3))
            wav = (0.1 * rng.standard_normal(n)).astype(np.float32)
            sf.write(tmp / f"u{i}.flac", wav, 16_000, subtype="PCM_16")
            wavs.append(torch.from_numpy(sf.read(tmp / f"u{i}.flac", dtype="float32")[0]))
            rows.append({"id": f"u{i}", "audio": f"u{i}.flac", "samples": n, "sample_rate": 16_000,
                         "transcript": "", "speaker": "s", "split": "train"})  # fmt: skip
        (tmp / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        audio_seconds = sum(len(w) for w in wavs) / 16_000

        model = encoder.to(args.device)

        def bare() -> None:
            with (
                torch.inference_mode(),
                autocast(torch.device(args.device), args.precision),
            ):
                for w in wavs:
                    model(w[None].to(args.device)).last_hidden_state.cpu()

        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["cache_teacher"]["teacher"].update(
            source=f"hf:{tmp / 'teacher'}", device=args.device, precision=args.precision
        )
        params["cache_teacher"]["threads"] = args.threads
        for key in ("batch_seconds", "loader_workers"):
            if getattr(args, key) is not None:
                params["cache_teacher"][key] = getattr(args, key)
        if args.logits_only:
            params["cache_teacher"]["features"] = []
        cfg = section(params, "cache_teacher", CacheTeacherConfig)

        start = time.perf_counter()
        build_teacher(cfg.teacher).fingerprint()
        load_s = time.perf_counter() - start
        bare()  # warm-up
        bare_s = stage_s = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            bare()
            bare_s = min(bare_s, time.perf_counter() - start)
            shutil.rmtree(tmp / "cache", ignore_errors=True)  # else its parts are reused
            start = time.perf_counter()
            cache_teacher.run(cfg, tmp / "manifest.jsonl", tmp / "cache")
            stage_s = min(stage_s, time.perf_counter() - start)

    print(
        f"device={args.device} precision={args.precision} threads={args.threads} "
        f"batch_seconds={cfg.batch_seconds} loader_workers={cfg.loader_workers} "
        f"features={list(cfg.features) or 'none (logits only)'}"
    )
    print(f"audio: {args.utterances} utterances, {audio_seconds:.1f} s; best of {args.repeats}")
    print(f"bare HubertModel forward : {bare_s:7.2f} s  {audio_seconds / bare_s:7.2f} s audio/s")
    print(f"cache-teacher stage      : {stage_s:7.2f} s  {audio_seconds / stage_s:7.2f} s audio/s")
    print(f"  of which load + hash   : {load_s:7.2f} s (once per run, whatever the corpus size)")
    print(
        f"stage-one overhead       : {stage_s / bare_s:.3f}x in all, "
        f"{(stage_s - load_s) / bare_s:.3f}x without loading and hashing (goal <= 1.10x)"
    )


if __name__ == "__main__":
    main()
