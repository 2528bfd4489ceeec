"""How far a recipe's training seeds spread, and how well two students pair by seed: students
trained with many training seeds under one recipe (params, with ``--set`` overrides), each
seed scored by the phoneme probe (PER; the ASR probe is left out unless ``--asr``), then per
student the seeds' PERs and their standard deviation, the same-seed correlation of PER between
the first two students, and their difference, paired by seed and unpaired (Welch), with each
design's interval and the seeds a side it would need for 1 point.

    .venv/bin/python bench/seed_spread.py --label base [--students kd dkd_b4] [--seeds 12]
        [--set 'train.average={kind: swa, start: 0.5}'] [--manifest data/manifest.jsonl]
        [--cache cache] [--work /tmp/seed-spread]   (after `make demo`: its data/ and cache/)

Each label's checkpoints and evaluations are kept in ``<work>/<label>``; a rerun reuses them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import yaml

from pipeline.core.config import load_params, override, section
from pipeline.corpus.manifest import read_manifest
from pipeline.evaluation.compare import ErrorCounts, estimate
from pipeline.evaluation.report import error_counts
from pipeline.evaluation.scoring import EvaluateConfig, probe_data, score_upstreams
from pipeline.evaluation.tasks import PR
from pipeline.evaluation.upstream import student_upstreams
from pipeline.students import parse_students
from pipeline.students.checkpoint import CHECKPOINT, load_students
from pipeline.training.config import TrainConfig
from stages import train_student

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="names this recipe's work folder")
    parser.add_argument("--students", nargs="+", default=["kd", "dkd_b4"])
    parser.add_argument("--seeds", type=int, default=12, help="training seeds 0 .. n-1")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                        help="a params override, e.g. train.steps=1200")  # fmt: skip
    parser.add_argument("--asr", action="store_true", help="also the ASR probe (WER)")
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument("--cache", default=str(ROOT / "cache"))
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--work", default="/tmp/seed-spread")
    args = parser.parse_args()
    changes = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    params = override(load_params(args.params), changes)
    seeds = tuple(range(args.seeds))
    students = {name: dataclasses.replace(parse_students(params)[name], seeds=seeds)
                for name in args.students}  # fmt: skip
    started = time.perf_counter()
    models, times = train_and_score(params, students, Path(args.manifest), args.cache,
                                    Path(args.work) / args.label, args.asr)  # fmt: skip
    print(f"{args.label}: {', '.join(args.students)} x {len(seeds)} training seeds; "
          f"{' '.join(args.set) or 'params as they are'}; train {times['train']:.0f} s, "
          f"evaluate {times['evaluate']:.0f} s (0 s: reused); {time.perf_counter() - started:.0f} "
          "s in all")  # fmt: skip
    split = section(params, "evaluate", EvaluateConfig).splits[0]
    for metric in ["per", "wer"] if args.asr else ["per"]:
        report(models, split, metric)


def train_and_score(
    params: dict, students: dict, manifest: Path, cache: str, work: Path, asr: bool
) -> tuple[dict[str, dict], dict[str, float]]:
    """Train ``students`` not yet trained there (each with its seeds, in one run: each seed's
    batches read once for all) into ``work/<name>``, score each seed with the phoneme probe
    (and the ASR probe with ``asr``) into ``work/<name>.json``, reusing what ``work`` holds;
    returns the evaluations and the seconds each part took."""
    outs = {name: work / name for name in students}
    started = time.perf_counter()
    missing = {name: s for name, s in students.items() if not (outs[name] / CHECKPOINT).is_file()}
    if missing:
        train_student.run(missing, section(params, "train", TrainConfig), manifest, cache,
                          {name: outs[name] for name in missing}, work / "state.pt")  # fmt: skip
    trained = time.perf_counter()
    cfg = section(params, "evaluate", EvaluateConfig)
    data = probe_data(cfg, read_manifest(manifest))
    if not asr:
        data = dataclasses.replace(data, tasks=[PR])
    models = {}
    for name, out in outs.items():
        path = work / f"{name}.json"
        if not path.is_file():
            seeds, checkpoint = load_students(out / CHECKPOINT)
            metrics = score_upstreams(student_upstreams(name, seeds), cfg, data, manifest)
            metrics["pairing"] = checkpoint.get("pairing", "")
            path.write_text(json.dumps(metrics))
        models[name] = json.loads(path.read_text())
    times = {"train": trained - started, "evaluate": time.perf_counter() - trained}
    return models, times


def report(models: dict[str, dict], split: str, metric: str) -> None:
    """Each student's seeds, their spread, and the first two students compared both ways."""
    counts = {name: error_counts(model, split, metric) for name, model in models.items()}
    for name, c in counts.items():
        rates = 100 * c.rates
        print(f"  {name} {metric.upper()} by seed: " + " ".join(f"{r:.2f}" for r in rates)
              + f"  mean {rates.mean():.2f}, sd {statistics.stdev(rates):.2f}")  # fmt: skip
    (a_name, a), (b_name, b) = list(counts.items())[:2]
    b_rates = b.by_seed(a.seeds).sum(1) / b.tokens.sum()  # b's seeds in a's order
    r = float(np.corrcoef(a.rates, b_rates)[0, 1])
    print(f"  same-seed correlation of {metric.upper()}, {a_name} and {b_name}: {r:+.2f}")
    for result in (estimate(a, b), estimate(a, ErrorCounts(b.ids, b.tokens, b.errors))):
        need = result.seeds_needed or {}
        print(f"  {a_name} - {b_name}, {result.design}: {100 * result.value:+.2f} "
              f"[{100 * result.low:+.2f}, {100 * result.high:+.2f}] half-width "
              f"{100 * result.half_width:.2f} ({result.dof:.1f} dof) {result.verdict}; seeds a "
              f"side for 1 point: {need.get('one_point', '-')}")  # fmt: skip


if __name__ == "__main__":
    main()
