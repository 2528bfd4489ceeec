"""Top-k codec fidelity on teacher logits: KD/DKD from the decoded cache vs from fp32 logits.

Runs a HuBERT Base-size teacher (random weights, 500-cluster head; or --teacher for a real one)
over demo-corpus utterances, then for each codec prints bytes/frame, the relative error of the
KD and DKD losses (against a student = teacher logits + Gaussian noise) at tau 1, 2, 4, and
top-1 agreement of the decoded logits with fp32. Budget: |error| <= 1%, top-1 exact.

    .venv/bin/python bench/cache_fidelity.py [--manifest data/manifest.jsonl] [--utterances 40]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import HubertConfig, HubertModel

from pipeline.audio.files import read_audio
from pipeline.core.config import section
from pipeline.corpus.manifest import audio_path, read_manifest
from pipeline.losses import dkd_loss, kd_loss
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.teacher.head import ClusterHead
from pipeline.teacher.model import Teacher
from pipeline.teacher.sources import build_teacher
from storage.codecs import CODECS, FullConfig, TopKConfig

ROOT = Path(__file__).resolve().parents[1]


def teacher_logits(args) -> np.ndarray:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if args.teacher:
        params["cache_teacher"]["teacher"]["source"] = args.teacher
    cfg = section(params, "cache_teacher", CacheTeacherConfig).teacher
    if args.teacher:
        teacher = build_teacher(cfg)
    else:
        torch.manual_seed(0)
        teacher = Teacher(HubertModel(HubertConfig()), ClusterHead(768, 256, 500, 0.1),
                          normalize=False, description="random HuBERT Base", cfg=cfg)  # fmt: skip
    manifest = Path(args.manifest)
    utts = read_manifest(manifest)[: args.utterances]
    return np.concatenate(
        [teacher.logits([read_audio(audio_path(u, manifest))])[0].numpy() for u in utts]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--teacher", default="", help="teacher source; default: random HuBERT Base")
    parser.add_argument("--ks", default="8,16,32,64,128")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    logits = teacher_logits(args)
    targets = logits.argmax(-1)
    frames, classes = logits.shape
    peak = float(torch.softmax(torch.from_numpy(logits), -1).max(-1).values.mean())
    print(f"{frames} frames x {classes} classes; mean max prob {peak:.3f}")
    rng = np.random.default_rng(0)
    student = torch.from_numpy(logits + rng.normal(size=logits.shape).astype(np.float32))[None]
    mask = torch.ones(1, frames, dtype=torch.bool)
    y = torch.from_numpy(targets)[None]
    reference = torch.from_numpy(logits)[None]
    codecs = {"full fp16": CODECS["full"](FullConfig("float16"))}
    codecs |= {f"topk k={k}": CODECS["topk"](TopKConfig(int(k))) for k in args.ks.split(",")}
    print(
        f"{'codec':>12} {'B/frame':>8} {'top1':>6}  "
        + "  ".join(f"KD tau{t:<2} DKD tau{t:<2}" for t in (1, 2, 4))
    )
    for name, codec in codecs.items():
        decoded = torch.from_numpy(codec.decode(codec.encode(logits, targets), classes))[None]
        top1 = float((decoded.argmax(-1) == reference.argmax(-1)).float().mean())
        errors = []
        for tau in (1.0, 2.0, 4.0):
            kd = [float(kd_loss(student, t, mask, tau=tau)["kd"]) for t in (reference, decoded)]
            dkd = [
                float(dkd_loss(student, t, y, mask, alpha=1.0, beta=8.0, tau=tau)["dkd"])
                for t in (reference, decoded)
            ]
            errors += [kd[1] / kd[0] - 1, dkd[1] / dkd[0] - 1]
        cells = "  ".join(f"{e:+8.2%}" for e in errors)
        print(f"{name:>12} {codec.bytes_per_frame(classes) + 4:>8} {top1:>6.3f}  {cells}")


if __name__ == "__main__":
    main()
