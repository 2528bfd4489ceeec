"""A/A calibration of the comparisons: one student configuration trained with many training
seeds (one pass over the cache), every seed evaluated, then compared with itself: the seeds
dealt at random into two disjoint sets of ``--per-side`` and the two sets compared as if they
were two students (``pipeline.evaluation.compare``, the report's own statistics). A calibrated
comparison finds no difference: at 95%, about 5% of such comparisons or fewer may come out
better or worse, and none should be far from it.

Random deals share seeds, so they are not independent: the count of fully disjoint pairs is
printed too. Also printed: each seed's PER and WER, and the comparisons' interval widths.

    .venv/bin/python bench/calibration.py [--student dkd_b4] [--seeds 12] [--per-side 3]
        [--deals 200] [--work /tmp/calibration]  (after `make demo`: its data/ and cache/)
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
from pathlib import Path

import numpy as np

from pipeline.core.config import load_params, section
from pipeline.evaluation.compare import ErrorCounts, estimate, replicate_errors
from pipeline.evaluation.report import COMPARED, ReportConfig
from pipeline.evaluation.scoring import EvaluateConfig
from pipeline.students import parse_students
from pipeline.students.checkpoint import CHECKPOINT
from pipeline.training.config import TrainConfig
from stages import evaluate_student, train_student

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument("--cache", default=str(ROOT / "cache"))
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--student", default="dkd_b4")
    parser.add_argument("--seeds", type=int, default=12, help="training seeds 0 .. n-1")
    parser.add_argument("--per-side", type=int, default=3, help="seeds on each side of a pair")
    parser.add_argument("--deals", type=int, default=200, help="random deals of the seeds")
    parser.add_argument("--work", default="/tmp/calibration", help="kept: reruns reuse it")
    args = parser.parse_args()
    params = load_params(args.params)
    manifest, work = Path(args.manifest), Path(args.work)
    student = dataclasses.replace(parse_students(params)[args.student],
                                  seeds=tuple(range(args.seeds)))  # fmt: skip
    out = work / args.student
    if not (out / CHECKPOINT).is_file():
        train_student.run({args.student: student}, section(params, "train", TrainConfig),
                          manifest, args.cache, {args.student: out}, work / "state.pt")  # fmt: skip
    evaluation = work / f"{args.student}.json"
    cfg = section(params, "evaluate", EvaluateConfig)
    metrics = evaluate_student.run(cfg, args.student, out / CHECKPOINT, manifest, args.cache,
                                   evaluation)  # fmt: skip
    report = section(params, "report", ReportConfig)
    split = cfg.splits[0]
    utts = metrics["utterances"][split]
    print(f"{args.student}, {args.seeds} training seeds, {split} ({len(utts['ids'])} "
          f"utterances), {cfg.probe.seeds} probe seed(s) each")  # fmt: skip
    for metric in COMPARED:
        rates = metrics["splits"][split][metric]["runs"]
        print(f"  {metric.upper()} per run: " + " ".join(f"{100 * r:.1f}" for r in rates)
              + f"  (sd {100 * statistics.stdev(rates):.2f} points)")  # fmt: skip
    rng = random.Random(0)
    print(f"\nA/A: {args.deals} random deals of {args.per_side} + {args.per_side} seeds "
          f"({args.seeds // (2 * args.per_side)} fully disjoint pairs), "
          f"{round(100 * report.confidence)}% intervals")  # fmt: skip
    print("| rate | not resolved | better | worse | median half-width (points) |")
    print("|---|---|---|---|---|")
    for metric in COMPARED:
        errors = replicate_errors(metrics["runs"], utts["errors"][metric])
        tokens = np.asarray(utts["tokens"][metric])
        ids = tuple(utts["ids"])
        verdicts, widths = [], []
        for _ in range(args.deals):
            seeds = rng.sample(range(len(errors)), 2 * args.per_side)
            a = ErrorCounts(ids, tokens, errors[seeds[: args.per_side]])
            b = ErrorCounts(ids, tokens, errors[seeds[args.per_side :]])
            result = estimate(a, b, confidence=report.confidence, draws=report.bootstrap,
                              seed=rng.randrange(1 << 30))  # fmt: skip
            verdicts.append(result["verdict"])
            widths.append(result["half_width"])
        share = {v: verdicts.count(v) / len(verdicts) for v in ("not resolved", "better", "worse")}
        print(f"| {metric.upper()} | {share['not resolved']:.1%} | {share['better']:.1%} | "
              f"{share['worse']:.1%} | {100 * statistics.median(widths):.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
