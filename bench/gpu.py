"""Throughput of both stages on one GPU, against a bare HubertModel forward, in one table.

Builds a HuBERT Base-size teacher (random weights, group-norm conv stack, 12 x 768, a
500-cluster head) and a corpus of synthetic utterances, then measures on the same audio, with
configs/paper.yaml's settings (bf16 on CUDA):

- the bare ``HubertModel`` forward, one utterance at a time and batched (the limit);
- the ``cache-teacher`` stage, logits only (the paper's codec, ``pq`` at 62 bytes) and with the
  conv feature cached as int8;
- ``train-student`` with the paper's ``dkd_b4`` student (trainable conv front end), then with
  ``frontend: cached`` and ``frontend: fbank``, in frames/s, with the GPU's busy share
  (nvidia-smi, sampled every 200 ms) and the input path alone (cache reader + audio decoding
  in the loader workers) against what training consumes;
- a sweep of 4 betas in one pass against one student.

Prints one table: today's figures (issue 15, one H100), this run's, and the goals. The same
script runs on a CPU at toy sizes (``--small``), as the test suite does.

    .venv/bin/python bench/gpu.py [--utterances 192] [--seconds 10] [--steps 80] [--small]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml
from torch.nn.utils.rnn import pad_sequence
from transformers import HubertConfig, HubertModel

from pipeline.core.config import section
from pipeline.core.device import autocast
from pipeline.corpus.manifest import read_manifest
from pipeline.students import grid_students, parse_student
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.teacher.head import ClusterHead
from pipeline.teacher.sources import save_teacher
from pipeline.training.cache_batches import CacheBatches
from pipeline.training.config import TrainConfig
from stages import cache_teacher, train_student

ROOT = Path(__file__).resolve().parents[1]
TODAY = {  # issue 15, one H100, bf16
    "bare": "608 s/s", "stage": "810 s/s (topk 64)", "stage_feat": "250 s/s",
    "conv": "22.2k fr/s, 40-50% busy", "cached": "34.0k fr/s", "fbank": "30.8k fr/s",
    "sweep": "2.05x",
}  # fmt: skip
SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 128, "conv_dim": (32,) * 7}  # fmt: skip


def corpus(tmp: Path, n: int, seconds: float) -> tuple[Path, list[torch.Tensor]]:
    rng = np.random.default_rng(0)
    rows, wavs = [], []
    for i in range(n):
        samples = int(16_000 * seconds * rng.uniform(0.7, 1.3))
        wav = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        sf.write(tmp / f"u{i}.flac", wav, 16_000, subtype="PCM_16")
        wavs.append(torch.from_numpy(sf.read(tmp / f"u{i}.flac", dtype="float32")[0]))
        rows.append({"id": f"u{i}", "audio": f"u{i}.flac", "samples": samples,
                     "sample_rate": 16_000, "transcript": "", "speaker": "s",
                     "split": "train"})  # fmt: skip
    (tmp / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp / "manifest.jsonl", wavs


def synced(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bare(model, wavs, device, precision, batch_seconds) -> tuple[float, float]:
    """Seconds of audio per second: one utterance at a time, and length-sorted batches (the
    group-norm conv stack runs per utterance there too, so batching is exact)."""
    audio = sum(len(w) for w in wavs) / 16_000
    dev = torch.device(device)

    def one():
        with torch.inference_mode(), autocast(dev, precision):
            for w in wavs:
                model(w[None].to(dev)).last_hidden_state.float().cpu()

    def batched():
        order = sorted(wavs, key=len)
        groups, group = [], []
        for w in order:
            if group and (len(group) + 1) * len(w) / 16_000 > batch_seconds:
                groups.append(group)
                group = []
            group.append(w)
        groups.append(group)
        with torch.inference_mode(), autocast(dev, precision):
            for g in groups:
                x = pad_sequence(g, batch_first=True).to(dev)
                mask = (torch.arange(x.shape[1], device=dev)[None] <
                        torch.tensor([len(w) for w in g], device=dev)[:, None]).long()  # fmt: skip
                model(x, attention_mask=mask).last_hidden_state.float().cpu()

    one()
    return audio / synced(one), audio / synced(batched)


class Busy:
    """The GPU's utilisation, sampled by nvidia-smi every 200 ms while in the block."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def __enter__(self) -> Busy:
        if shutil.which("nvidia-smi") and torch.cuda.is_available():
            cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                   "-lms", "200", "-i", str(torch.cuda.current_device())]  # fmt: skip
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(float(line))

    def __exit__(self, *exc) -> None:
        if hasattr(self, "proc"):
            self.proc.terminate()

    def share(self) -> str:
        return f"{np.mean(self.samples):.0f}% busy" if self.samples else "busy n/a"


def train(params, manifest, cache, students, out) -> tuple[float, float, str]:
    """(frames/s over all students, wall seconds, GPU busy share) of one pass."""
    cfg = section(params, "train", TrainConfig)
    dirs = {n: out / n for n in students}
    with Busy() as busy:
        start = time.perf_counter()
        results = train_student.run(students, cfg, manifest, cache, dirs, out / "state.pt")
        wall = time.perf_counter() - start
    rate = next(iter(results.values()))["frames_per_second"]
    return rate, wall, busy.share()


def input_rate(params, manifest, cache) -> float:
    """Frames/s of the input path alone: cache blocks + audio decoding + batches, in the
    configured loader workers, as training reads them."""
    cfg = section(params, "train", TrainConfig)
    dataset = CacheBatches(cache, read_manifest(manifest), manifest,
                           batch_seconds=cfg.batch_seconds / cfg.streams, seed=0, shuffle=True,
                           pool=cfg.shuffle_pool)  # fmt: skip
    loader = torch.utils.data.DataLoader(dataset, batch_size=None,
                                         num_workers=cfg.loader_workers * cfg.streams)  # fmt: skip
    start, frames = time.perf_counter(), 0
    for batch in loader:
        frames += batch.num_frames
    return frames / (time.perf_counter() - start)


def main() -> None:  # noqa: PLR0915  (one measured story, top to bottom)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=192)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--small", action="store_true", help="toy sizes, for a CPU")
    args = parser.parse_args()
    os.environ["HUBERT_KD_NO_PROGRESS"] = "1"
    cuda = torch.cuda.is_available()
    device, precision = ("cuda", "bf16") if cuda else ("cpu", "fp32")
    params = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        encoder = HubertModel(HubertConfig(**(SMALL if args.small else {}))).eval()
        hidden = encoder.config.hidden_size
        save_teacher(tmp / "teacher", encoder, ClusterHead(hidden, 256, 500, 0.1), {})
        manifest, wavs = corpus(tmp, args.utterances, args.seconds)
        audio = sum(len(w) for w in wavs) / 16_000
        stage = params["cache_teacher"]
        codec = " ".join(str(v) for v in stage["codec"].values())
        stage["teacher"].update(source=f"hf:{tmp / 'teacher'}", device=device, precision=precision)
        if not cuda:
            stage.update(threads=os.cpu_count() or 1, loader_workers=0, batch_seconds=0.0)
        one, batched = bare(encoder.to(device), wavs, device, precision, stage["batch_seconds"])
        rates = {}
        for name, features in (("stage", []), ("stage_feat", ["conv"])):
            stage.update(features=features, feature_encoding="int8")
            cfg = section(params, "cache_teacher", CacheTeacherConfig)
            out = tmp / name
            rates[name] = audio / synced(lambda c=cfg, o=out: cache_teacher.run(c, manifest, o))
        cache = tmp / "stage_feat"
        params["train"].update(steps=args.steps, warmup_steps=1, checkpoint_every=0,
                               log_every=max(1, args.steps // 4), device=device,
                               precision=precision)  # fmt: skip
        if not cuda:
            params["train"].update(batch_seconds=8.0, streams=1, loader_workers=0, threads=2)
        base = params["students"]["dkd_b4"]
        if args.small:
            base["model"].update(proj_dim=64, lstm_layers=1, lstm_hidden=64)
        train_rates = {}
        for front in ("conv", "cached", "fbank"):
            raw = {**base, "model": {**base["model"], "frontend": front}}
            chosen = {f"dkd_{front}": parse_student(raw, front)}
            train_rates[front] = train(params, manifest, cache, chosen, tmp / front)
        feed = input_rate(params, manifest, cache)
        grid = grid_students("dkd", {**base, "model": {**base["model"], "frontend": "cached"}},
                             {"losses.dkd.beta": [1, 4, 8, 16]})  # fmt: skip
        sweep = {n: parse_student(r, n) for n, r in grid.items()}
        _, sweep_s, _ = train(params, manifest, cache, sweep, tmp / "sweep")
        one_s = train_rates["cached"][1]

    gpu = torch.cuda.get_device_name() if cuda else "CPU (toy sizes)" if args.small else "CPU"
    print(f"{gpu}; {args.utterances} utterances, {audio:.0f} s of audio; {args.steps} steps")
    rows = [
        ("bare HubertModel forward, one at a time", TODAY["bare"], f"{one:,.0f} s/s", ""),
        ("bare HubertModel forward, batched (the limit)", "", f"{batched:,.0f} s/s", ""),
        (f"cache-teacher, logits only ({codec})", TODAY["stage"],
         f"{rates['stage']:,.0f} s/s ({batched / rates['stage']:.2f}x the limit)",
         ">= 3000 s/s, <= 1.15x"),
        ("cache-teacher, + conv feature int8", TODAY["stage_feat"],
         f"{rates['stage_feat']:,.0f} s/s", ">= 2000 s/s"),
        ("train dkd_b4, trainable conv front end", TODAY["conv"],
         f"{train_rates['conv'][0]:,.0f} fr/s, {train_rates['conv'][2]}", ">= 70k fr/s, >= 85%"),
        ("train dkd_b4, frontend: cached", TODAY["cached"],
         f"{train_rates['cached'][0]:,.0f} fr/s, {train_rates['cached'][2]}", ""),
        ("train dkd_b4, frontend: fbank", TODAY["fbank"],
         f"{train_rates['fbank'][0]:,.0f} fr/s, {train_rates['fbank'][2]}", ""),
        ("input path alone (reader + decode)", "",
         f"{feed:,.0f} fr/s ({feed / train_rates['conv'][0]:.1f}x consumption)", ">= 3x"),
        ("sweep of 4 betas / one student (wall)", TODAY["sweep"],
         f"{sweep_s / one_s:.2f}x ({sweep_s:.1f} s vs {one_s:.1f} s)", "<= 1.5x"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"| {'what':<{width}} | today (H100) | this run | goal |")
    print(f"|{'-' * (width + 2)}|---|---|---|")
    for what, today, now, goal in rows:
        print(f"| {what:<{width}} | {today} | {now} | {goal} |")


if __name__ == "__main__":
    main()
