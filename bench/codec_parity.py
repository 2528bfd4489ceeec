"""Student parity: does a student trained from a compressed cache match one trained from the
exact cache? Both caches are made from the same teacher and corpus (``full`` float16 and the
codec under test); the same student (``--student``, default the demo's dkd_b4) is trained from
each with several training seeds (one pass each), and every seed is evaluated against the
exact cache (top-1 agreement and KL with the exact teacher) and in the probes (PER, WER). The
compressed cache's student is then compared with the exact one's, paired by utterance, with
an interval over seeds and utterances (``pipeline.evaluation.compare``): parity is a
difference that is not resolved, and the interval says how large a difference could hide.

    .venv/bin/python bench/codec_parity.py [--codec pq:62] [--seeds 0,1,2] [--student dkd_b4]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import yaml

from pipeline.core.config import section
from pipeline.evaluation.readout import compare_lines
from pipeline.evaluation.report import ReportConfig
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
    seeds = tuple(int(s) for s in args.seeds.split(","))
    student = {args.student: dataclasses.replace(parse_students(params)[args.student],
                                                 seeds=seeds)}  # fmt: skip
    eval_cfg = section(params, "evaluate", EvaluateConfig)
    evaluations: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        caches = {}
        for name, codec in codecs.items():
            stage = dict(params["cache_teacher"], codec=codec, features=["conv"])
            cfg = section({"cache_teacher": stage}, "cache_teacher", CacheTeacherConfig)
            caches[name] = Path(tmp) / name.split()[0].replace(":", "-")
            header = cache_teacher.run(cfg, manifest, caches[name])
            print(f"{name}: {header.bytes_per_frame()} bytes/frame ({header.codec})", flush=True)
        exact = caches["exact (full float16)"]
        train_cfg = section(params, "train", TrainConfig)
        for name, cache in caches.items():
            out = Path(tmp) / f"{cache.name}-student"
            train_student.run(student, train_cfg, manifest, cache, {args.student: out},
                              out / "state.pt")  # fmt: skip
            evaluations[name] = evaluate_student.run(
                eval_cfg, args.student, out / "model.pt", manifest, exact, out / "eval.json"
            )
    split = eval_cfg.splits[0]
    print(f"\n{args.student}, training seeds {args.seeds}, {split}: mean (min-max) over training "
          "seeds, against the exact teacher")  # fmt: skip
    print("| cache | PER | WER | top-1 agreement | KL(T, S) |\n|---|---|---|---|---|")
    for name, metrics in evaluations.items():
        scores = metrics["splits"][split]
        cells = []
        for key, fmt in (("per", "{:.1%}"), ("wer", "{:.1%}"), ("top1_agreement", "{:.2%}"),
                         ("kl", "{:.4f}")):  # fmt: skip
            values = scores[key].get("seeds") or scores[key]["runs"]
            cells.append(f"{fmt.format(statistics.fmean(values))} ({fmt.format(min(values))}-"
                         f"{fmt.format(max(values))})")  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")
    sides = (args.codec, evaluations[args.codec]), ("exact", evaluations["exact (full float16)"])
    for line in compare_lines(*sides, [split], ReportConfig()):
        print(line)


if __name__ == "__main__":
    main()
