"""The demo's frontier: how narrow the PER interval of two students' comparison gets for the
training seeds a side the demo can pay for. From two students trained with many seeds under
one recipe (`bench/seed_spread.py`'s evaluations), for each number of seeds m: random sets of m
seeds (the same on both sides: paired by seed, as the demo's students are), the comparison's
95% half-width (median over the sets) and how often it is resolved or within the target
half-width; beside it, the demo's minutes at m seeds for each of its students, from the costs
measured in a demo run (``--fixed``: what does not grow with seeds; ``--per-seed``: training
and evaluation of one seed of one student; ``--students``: how many the demo trains).

    .venv/bin/python bench/frontier.py /tmp/seed-spread/<label> [--a dkd_b4] [--b kd]
        [--seeds 3 4 5 6 8 12] [--fixed 400] [--per-seed 26] [--students 4] [--target 1.0]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from pipeline.evaluation.compare import estimate
from pipeline.evaluation.report import error_counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", help="a seed_spread work folder holding <a>.json and <b>.json")
    parser.add_argument("--a", default="dkd_b4")
    parser.add_argument("--b", default="kd")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5, 6, 8, 12])
    parser.add_argument("--sets", type=int, default=200, help="random seed sets per m")
    parser.add_argument("--fixed", type=float, required=True, help="demo seconds not per seed")
    parser.add_argument("--per-seed", type=float, required=True,
                        help="seconds to train and evaluate one seed of one student")  # fmt: skip
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--target", type=float, default=1.0, help="half-width goal, points")
    args = parser.parse_args()
    work = Path(args.work)
    a, b = (error_counts(json.loads((work / f"{n}.json").read_text()), args.split, "per")
            for n in (args.a, args.b))  # fmt: skip
    print(f"{args.a} vs {args.b}, PER on {args.split}, paired by seed; seeds drawn from "
          f"{len(a.seeds)} ({work}); demo minutes = ({args.fixed:g} + {args.students} x m x "
          f"{args.per_seed:g}) / 60")  # fmt: skip
    print(f"\n| seeds a side | demo minutes | median half-width (points) | resolved or within "
          f"{args.target:g} point |")  # fmt: skip
    print("|---|---|---|---|")
    rng = random.Random(0)
    for m in args.seeds:
        widths, good = [], 0
        for _ in range(args.sets if m < len(a.seeds) else 1):
            seeds = tuple(rng.sample(list(a.seeds), m))
            result = estimate(a.select(seeds), b.select(seeds), draws=1000)
            widths.append(100 * result.half_width)
            good += result.verdict != "not resolved" or 100 * result.half_width <= args.target
        minutes = (args.fixed + args.students * m * args.per_seed) / 60
        print(f"| {m} | {minutes:.1f} | {statistics.median(widths):.2f} | "
              f"{good / len(widths):.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
