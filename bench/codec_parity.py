"""Student parity: does a student trained from a compressed cache match one trained from the
exact cache? Both caches are made from the same teacher and corpus (``full`` float16 and the
codec under test); the same student (``--student``, default the demo's dkd_b4) is trained from
each with several training seeds, and every one is evaluated against the exact cache (top-1
agreement and KL with the exact teacher) and in the ASR probe (WER). Parity: the compressed
cache's range over seeds overlaps the exact one's.

    .venv/bin/python bench/codec_parity.py [--codec pq:62] [--seeds 0,1,2] [--student dkd_b4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import yaml

from pipeline.core.config import section
from pipeline.evaluation.scoring import EvaluateConfig
from pipeline.students import parse_students
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.training.config import TrainConfig
from stages import cache_teacher, evaluate_student, train_student

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument(
        "--codec", default="pq:62", help="pq:<bytes>, projection, or full:<dtype> (a control)"
    )
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument("--student", default="dkd_b4")
    args = parser.parse_args()
    manifest = Path(args.manifest)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    kind, _, value = args.codec.partition(":")
    setting = {"pq": lambda: {"bytes": int(value)}, "full": lambda: {"dtype": value}}
    codecs = {"exact (full float16)": {"kind": "full", "dtype": "float16"},
              args.codec: {"kind": kind, **setting.get(kind, dict)()}}  # fmt: skip
    student = {args.student: parse_students(params)[args.student]}
    eval_cfg = section(params, "evaluate", EvaluateConfig)
    results: dict[str, list[dict]] = {name: [] for name in codecs}
    with tempfile.TemporaryDirectory() as tmp:
        caches = {}
        for name, codec in codecs.items():
            stage = dict(params["cache_teacher"], codec=codec, features=["conv"])
            cfg = section({"cache_teacher": stage}, "cache_teacher", CacheTeacherConfig)
            caches[name] = Path(tmp) / name.split()[0].replace(":", "-")
            header = cache_teacher.run(cfg, manifest, caches[name])
            print(f"{name}: {header.bytes_per_frame()} bytes/frame ({header.codec})", flush=True)
        exact = caches["exact (full float16)"]
        for seed in (int(s) for s in args.seeds.split(",")):
            train_cfg = section({"train": dict(params["train"], seed=seed)}, "train", TrainConfig)
            for name, cache in caches.items():
                out = Path(tmp) / f"{cache.name}-{seed}"
                train_student.run(student, train_cfg, manifest, cache, {args.student: out},
                                  out / "state.pt")  # fmt: skip
                metrics = evaluate_student.run(eval_cfg, args.student, out / "model.pt",
                                               manifest, exact, out / "eval.json")  # fmt: skip
                scores = next(iter(metrics["splits"].values()))
                results[name].append(scores)
                wer, top1, kl = scores["wer"]["mean"], scores["top1_agreement"], scores["kl"]
                print(f"  seed {seed} {name}: WER {wer:.3f} top-1 {top1:.4f} KL {kl:.4f}")
    print(f"\n{args.student}, seeds {args.seeds}: mean (min-max) over training seeds, against the "
          "exact teacher")  # fmt: skip
    print("| cache | WER | top-1 agreement | KL(T, S) |\n|---|---|---|---|")
    for name, runs in results.items():
        cells = []
        for key, fmt in (("wer", "{:.1%}"), ("top1_agreement", "{:.2%}"), ("kl", "{:.4f}")):
            values = [r[key]["mean"] if isinstance(r[key], dict) else r[key] for r in runs]
            cells.append(f"{fmt.format(statistics.fmean(values))} ({fmt.format(min(values))}-"
                         f"{fmt.format(max(values))})")  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
