"""Calibration of the comparisons at demo scale, for the designs the report uses: a student and
its twin, the same student trained with torch's vector kernels off (``ATEN_CPU_CAPABILITY=
default``, in a process of its own): the same recipe, seeds, initial weights and batches, so
equal by construction, but not bit-identical (its floating-point rounding differs from the
first update on, as on another CPU). Both are trained with the same training seeds, each seed
scored by the phoneme probe (PER; ``--asr`` adds the ASR probe's WER); then, over many deals of
the seeds:

- **paired null**: ``--per-side`` seeds drawn at random, the student against its twin on
  those seeds, paired by seed (they share initial weights and batch order): a calibrated
  design finds no difference in about 95% of deals or more;
- **unpaired null (A/A)**: the student's seeds dealt into two disjoint sets, compared as two
  students (other seeds: unpaired);
- **planted**: the paired null with 1 point of errors added to the twin, on every utterance in
  proportion to its reference: found, with its sign, in most deals, never the other way.

Deals share seeds, so they are not independent (the count of fully disjoint deals is printed).

    .venv/bin/python bench/calibration.py [--student kd] [--seeds 12] [--per-side 6]
        [--deals 200] [--set KEY=YAML ...] [--work /tmp/calibration]
        (after `make demo`: its data/ and cache/; a rerun reuses the work folder)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from seed_spread import train_and_score

from pipeline.core.config import load_params, override, section
from pipeline.evaluation.compare import ONE_POINT, ErrorCounts, estimate
from pipeline.evaluation.report import COMPARED, ReportConfig, error_counts
from pipeline.evaluation.scoring import EvaluateConfig
from pipeline.students import parse_students

ROOT = Path(__file__).resolve().parents[1]
TWIN_KERNELS = {"ATEN_CPU_CAPABILITY": "default"}  # how the twin is trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument("--cache", default=str(ROOT / "cache"))
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                        help="a params override, e.g. train.steps=1200")  # fmt: skip
    parser.add_argument("--student", default="kd")
    parser.add_argument("--seeds", type=int, default=12, help="training seeds 0 .. n-1")
    parser.add_argument("--per-side", type=int, default=6, help="seeds on each side of a deal")
    parser.add_argument("--deals", type=int, default=200, help="random deals of the seeds")
    parser.add_argument("--asr", action="store_true", help="also the ASR probe (WER)")
    parser.add_argument("--work", default="/tmp/calibration", help="kept: reruns reuse it")
    parser.add_argument("--twin-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    changes = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    params = override(load_params(args.params), changes)
    student = dataclasses.replace(parse_students(params)[args.student],
                                  seeds=tuple(range(args.seeds)))  # fmt: skip
    names = (args.student, f"{args.student}_twin")
    work, manifest = Path(args.work), Path(args.manifest)
    if args.twin_only:  # the child process, its kernels set before torch was imported
        train_and_score(params, {names[1]: student}, manifest, args.cache, work, args.asr)
        return
    if not (work / names[1] / "model.pt").is_file():
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--twin-only"], check=True,
                       env={**os.environ, **TWIN_KERNELS})  # fmt: skip
    pair = {names[0]: student, names[1]: student}
    models, _ = train_and_score(params, pair, manifest, args.cache, work, args.asr)
    split = section(params, "evaluate", EvaluateConfig).splits[0]
    report = section(params, "report", ReportConfig)
    print(f"{args.student} and its twin (trained with {TWIN_KERNELS}), {args.seeds} training "
          "seeds, "
          f"{split}; {args.deals} deals of {args.per_side} seeds a side "
          f"({args.seeds // (2 * args.per_side)} fully disjoint for A/A), "
          f"{round(100 * report.confidence)}% intervals")  # fmt: skip
    rows = []
    for metric in [m for m in COMPARED if args.asr or m == "per"]:
        a, b = (error_counts(models[n], split, metric) for n in names)
        moved = np.abs(a.rates - b.by_seed(a.seeds).sum(1) / b.tokens.sum())
        print(f"  {metric.upper()} by seed, {names[0]}: "
              + " ".join(f"{100 * r:.2f}" for r in a.rates)
              + f" (sd {100 * statistics.stdev(a.rates):.2f}); the twin differs by up to "
              f"{100 * moved.max():.2f} points (0 would be bit-identical)")  # fmt: skip
        rows += deals(metric, a, b, args.per_side, args.deals, report)
    print("\n| rate | design | not resolved | better | worse | median half-width (points) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row)


def deals(metric: str, a: ErrorCounts, b: ErrorCounts, m: int, count: int,
          report: ReportConfig) -> list[str]:  # fmt: skip
    """The three designs' table rows for one rate, over ``count`` random deals of ``m`` seeds."""
    rng = random.Random(0)
    planted = dataclasses.replace(b, errors=b.errors + ONE_POINT * b.tokens[None, :])
    found: dict[str, list] = {"paired null": [], "unpaired null (A/A)": [], "planted 1 point": []}
    for _ in range(count):
        chosen = rng.sample(range(len(a.seeds)), 2 * m if 2 * m <= len(a.seeds) else m)
        side, other = chosen[:m], chosen[m:]
        seeds = tuple(a.seeds[i] for i in side)
        settings = (report.confidence, report.bootstrap, rng.randrange(1 << 30))
        results = {"paired null": estimate(a.select(seeds), b.select(seeds), *settings),
                   "planted 1 point": estimate(a.select(seeds), planted.select(seeds),
                                               *settings)}  # fmt: skip
        if other:
            rest = a.select(tuple(a.seeds[i] for i in other))
            results["unpaired null (A/A)"] = estimate(a.select(seeds), rest, *settings)
        for name, result in results.items():
            found[name].append(result)
    rows = []
    for name, results in found.items():
        if not results:
            continue
        share = {v: sum(r.verdict == v for r in results) / len(results)
                 for v in ("not resolved", "better", "worse")}  # fmt: skip
        widths = [100 * r.half_width for r in results if r.half_width is not None]
        width = f"{statistics.median(widths):.2f}" if widths else "- (no interval)"
        rows.append(f"| {metric.upper()} | {name}: {results[0].design} | "
                    f"{share['not resolved']:.1%} | {share['better']:.1%} | {share['worse']:.1%}"
                    f" | {width} |")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
