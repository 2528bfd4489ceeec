"""Inference real-time factor and peak memory of each student front end vs the teacher, on raw
audio, in one run.

Teacher: HuBERT Base size (random weights, 500-cluster head) or any ``--teacher`` source.
Students: the paper's `dkd_b4` (4 x 384 BiLSTM) from configs/paper.yaml with the teacher's conv
stack (``conv``; also what a ``cached`` student exports to) and with the light ``fbank`` front
end. Goal: the fbank student >= 5x faster than the teacher on CPU.

    .venv/bin/python bench/inference_rtf.py [--seconds 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import yaml
from transformers import HubertConfig, HubertModel

from pipeline.audio.frames import HUBERT_FRAMES
from pipeline.core.config import from_dict
from pipeline.evaluation.upstream import Upstream, efficiency
from pipeline.students import parse_student
from pipeline.students.checkpoint import build_student
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.conv import frontend_spec
from pipeline.teacher.head import ClusterHead
from pipeline.teacher.sources import build_teacher, save_teacher

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--teacher", default="", help="teacher source (default: Base size)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        source = args.teacher
        if not source:
            torch.manual_seed(0)
            save_teacher(
                Path(tmp), HubertModel(HubertConfig()), ClusterHead(768, 256, 500, 0.1), {}
            )
            source = f"hf:{tmp}"
        tcfg = dict(params["cache_teacher"]["teacher"], source=source, device="cpu",
                    precision="fp32")  # fmt: skip
        teacher = build_teacher(from_dict(TeacherConfig, tcfg, "teacher"))
    fe = teacher.encoder.feature_extractor
    conv = ({**frontend_spec(teacher.encoder.config), "normalize": teacher.normalize},
            fe.state_dict())  # fmt: skip
    rows = {"teacher": Upstream("teacher", "teacher", teacher.hidden_states, teacher)}
    for frontend in ("conv", "fbank"):
        raw = params["students"]["dkd_b4"]
        raw = raw | {"model": {**raw["model"], "frontend": frontend}}
        model = build_student(parse_student(raw, "s"), teacher.num_classes, HUBERT_FRAMES, conv)
        rows[f"student ({frontend})"] = Upstream(
            frontend, "student", model.eval().extract_features, model
        )
    print(
        f"{args.seconds:g} s of audio, {args.threads} threads, CPU; teacher {teacher.description}"
    )
    teacher_rtf = None
    for name, upstream in rows.items():
        m = efficiency(upstream, args.seconds)
        teacher_rtf = teacher_rtf or m["rtf"]
        print(
            f"  {name:<16} {upstream.parameters / 1e6:6.2f}M params  RTF {m['rtf']:.4f}  "
            f"({teacher_rtf / m['rtf']:5.2f}x faster than the teacher)  "
            f"peak {m['peak_memory_mb']:.0f} MB"
        )
    print("goal: student (fbank) >= 5x faster than the teacher")


if __name__ == "__main__":
    main()
