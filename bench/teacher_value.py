"""What the pre-trained teacher is worth to its students: the same students distilled from the
untrained teacher of the same size, scored by the same ASR probe.

Caches the demo corpus with ``cache_teacher.teacher.source: random`` (the architecture the demo
teacher was pre-trained from, ``pretrain_teacher.model``), trains the chosen students of
params.yaml from that cache with the `train` settings, and evaluates them exactly as their
`evaluate_student` stages do. Compare with `eval/report.md` from `make demo` (students of the
pre-trained teacher).

    .venv/bin/python bench/teacher_value.py [--students ce kd dkd_b4] [--out /tmp/teacher-value]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core.config import load_params, section
from pipeline.evaluation.scoring import EvaluateConfig
from pipeline.students import parse_students
from pipeline.students.checkpoint import CHECKPOINT
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.training.config import TrainConfig
from stages import cache_teacher, evaluate_student, train_student

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument("--students", nargs="+", default=["ce", "kd", "dkd_b4"])
    parser.add_argument("--out", default="/tmp/teacher-value")
    args = parser.parse_args()
    out, manifest = Path(args.out), Path(args.manifest)
    params = load_params(ROOT / "params.yaml")
    teacher = params["cache_teacher"]["teacher"]
    teacher.update(source="random", random=params["pretrain_teacher"]["model"])
    cache_cfg = section(params, "cache_teacher", CacheTeacherConfig)
    if not (out / "cache" / "header.json").is_file():
        cache_teacher.run(cache_cfg, manifest, out / "cache")
    students = {n: s for n, s in parse_students(params).items() if n in args.students}
    dirs = {n: out / "students" / n for n in students}
    todo = {n: s for n, s in students.items() if not (dirs[n] / CHECKPOINT).is_file()}
    for name, student in todo.items():
        train_student.run({name: student}, section(params, "train", TrainConfig), manifest,
                          out / "cache", {name: dirs[name]}, out / f"{name}.state")  # fmt: skip
    eval_cfg = section(params, "evaluate", EvaluateConfig)
    print("students distilled from the untrained teacher:")
    for name in students:
        metrics = evaluate_student.run(eval_cfg, name, dirs[name] / CHECKPOINT, manifest,
                                       out / "cache", out / "eval" / f"{name}.json")  # fmt: skip
        for split, row in metrics["splits"].items():
            print(
                f"  {name:<12} {split}: WER {row['wer']['mean']:.3f}  CER {row['cer']['mean']:.3f}"
                f"  PER {row['per']['mean']:.3f}  top-1 {row['top1_agreement']['mean']:.3f}"
            )


if __name__ == "__main__":
    main()
