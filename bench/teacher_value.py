"""What the pre-trained teacher is worth to its students: the same students distilled from the
untrained teacher of the same size, scored by the same ASR probe.

Caches the demo corpus with ``cache_teacher.teacher.source: random`` (the `random` architecture
the demo teacher was pre-trained from), trains the chosen students of params.yaml from that
cache with the `train` settings, and evaluates them exactly as `pipeline evaluate` does (no
baselines). Compare with `eval/report.md` from `make demo` (students of the pre-trained teacher).

    .venv/bin/python bench/teacher_value.py [--students ce kd dkd_b4] [--out /tmp/teacher-value]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pipeline.core.config import from_dict, load_params, section
from pipeline.students import parse_students
from pipeline.teacher.config import TeacherConfig
from pipeline.training.loop import TrainConfig
from stages import cache_teacher, evaluate, train_student

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument("--students", nargs="+", default=["ce", "kd", "dkd_b4"])
    parser.add_argument("--out", default="/tmp/teacher-value")
    args = parser.parse_args()
    out, manifest = Path(args.out), Path(args.manifest)
    params = load_params(ROOT / "params.yaml")
    params["cache_teacher"]["teacher"]["source"] = "random"
    cache_cfg = section(params, "cache_teacher", cache_teacher.CacheTeacherConfig)
    if not (out / "cache" / "header.json").is_file():
        cache_teacher.run(cache_cfg, manifest, out / "cache")
    students = {n: s for n, s in parse_students(params).items() if n in args.students}
    dirs = {n: out / "students" / n for n in students}
    todo = {n: s for n, s in students.items() if not (dirs[n] / train_student.CHECKPOINT).is_file()}
    for name, student in todo.items():
        train_student.run({name: student}, section(params, "train", TrainConfig), manifest,
                          out / "cache", {name: dirs[name]}, out / f"{name}.state")  # fmt: skip
    eval_cfg = dataclasses.replace(
        section(params, "evaluate", evaluate.EvaluateConfig), baselines=[]
    )
    teacher = from_dict(TeacherConfig, params["cache_teacher"]["teacher"], "teacher")
    checkpoints = {n: d / train_student.CHECKPOINT for n, d in dirs.items()}
    metrics = evaluate.run(eval_cfg, teacher, manifest, out / "cache", checkpoints, out / "eval")
    print(f"students distilled from the untrained teacher ({metrics['teacher']}):")
    for name, row in metrics["models"].items():
        agree = f"  top-1 {row['top1_agreement']:.3f}" if "top1_agreement" in row else ""
        print(
            f"  {name:<12} WER {row['wer']:.3f}  CER {row['cer']:.3f}  PER {row['per']:.3f}{agree}"
        )


if __name__ == "__main__":
    main()
