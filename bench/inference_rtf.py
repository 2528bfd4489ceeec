"""Inference real-time factor on the CPU of the teacher and of the paper-size student in each
exported form, on raw audio, in one run (issue 17's table).

Teacher: HuBERT Base size (random weights, 500-cluster head) or any ``--teacher`` source.
Students: the paper's `dkd_b4` (4 x 384 BiLSTM, configs/paper.yaml) with the teacher's conv
stack (``conv``) and with the light ``fbank`` front end, each as PyTorch, ONNX (onnxruntime),
int8 ONNX (each utterance run alone, so its outputs never depend on the batch) and the
exported transformers model. Speed does not depend on the weights, so they are random here;
the top-1 agreement of int8 with fp32 needs trained weights and real speech, so it is read
from the demo's exports (``exports/<name>/export.json``, written by `dvc repro`) when present.
Goal: the fbank student's int8 or ONNX form >= 10x faster than the teacher, with int8 top-1
agreement within 1 point of fp32.

    .venv/bin/python bench/inference_rtf.py [--seconds 10] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import HubertConfig, HubertModel

from pipeline.core.config import from_dict
from pipeline.export.checks import load_form
from pipeline.export.forms import write_forms
from pipeline.export.inference import Inference
from pipeline.nn.conv import frontend_spec
from pipeline.nn.frames import HUBERT_FRAMES
from pipeline.students import parse_student
from pipeline.students.checkpoint import build_student
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.head import ClusterHead
from pipeline.teacher.sources import build_teacher, save_teacher

ROOT = Path(__file__).resolve().parents[1]
FORMS = {"PyTorch": None, "ONNX": "onnx", "ONNX int8": "onnx-int8", "transformers": "hf"}


def seconds_per_call(run, wav, lengths, repeats: int) -> float:
    """Median wall time of ``run(wav, lengths)`` over ``repeats`` calls after one warm-up."""
    with torch.inference_mode():
        run(wav, lengths)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(wav, lengths)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def teacher_model(source: str, tmp: str):
    params = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    if not source:
        torch.manual_seed(0)
        save_teacher(Path(tmp), HubertModel(HubertConfig()), ClusterHead(768, 256, 500, 0.1), {})
        source = f"hf:{tmp}"
    cfg = dict(params["cache_teacher"]["teacher"], source=source, device="cpu", precision="fp32")
    return build_teacher(from_dict(TeacherConfig, cfg, "teacher")), params


def demo_agreement(name: str) -> str:
    path = ROOT / "exports" / name / "export.json"
    if not path.is_file():
        return f"{name}: no {path.relative_to(ROOT)} (run `dvc repro` for the demo's exports)"
    scores = json.loads(path.read_text()).get("int8_agreement") or {}
    parts = [f"{form} {s['top1_agreement']:.2%}" for form, s in scores.items()
             if isinstance(s, dict)]  # fmt: skip
    return f"{name} (trained, demo {scores.get('split')} split): " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--teacher", default="", help="teacher source (default: Base size)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = int(args.seconds * 16_000)
    wav = 0.1 * torch.randn(1, n, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([n])
    with tempfile.TemporaryDirectory() as tmp:
        teacher, params = teacher_model(args.teacher, tmp)
        stack = teacher.encoder.feature_extractor
        conv = ({**frontend_spec(stack), "normalize": teacher.normalize}, stack.state_dict())
        teacher_s = seconds_per_call(teacher.hidden_states, wav, lengths, args.repeats)
        print(f"{args.seconds:g} s of audio, {args.threads} threads, CPU, median of "
              f"{args.repeats}; teacher {teacher.description}")  # fmt: skip
        print(f"| model | form | params | RTF | x faster than the teacher |\n|---|---|---|---|---|"
              f"\n| teacher | PyTorch | {sum(p.numel() for p in teacher.parameters()) / 1e6:.1f}M"
              f" | {teacher_s / args.seconds:.4f} | 1.0 |")  # fmt: skip
        for frontend in ("conv", "fbank"):
            raw = params["students"]["dkd_b4"]
            raw = raw | {"model": {**raw["model"], "frontend": frontend}}
            student = build_student(parse_student(raw, "s"), 500, HUBERT_FRAMES, conv).eval()
            folder = Path(tmp) / frontend
            folder.mkdir()
            files = write_forms(student, ["onnx", "hf"], "int8", folder)
            size = sum(p.numel() for p in student.parameters()) / 1e6
            for label, form in FORMS.items():
                run = Inference(student) if form is None else load_form(
                    form.removesuffix("-int8"), folder / files[form])  # fmt: skip
                s = seconds_per_call(run, wav, lengths, args.repeats)
                print(f"| paper dkd_b4 ({frontend}) | {label} | {size:.1f}M | "
                      f"{s / args.seconds:.4f} | {teacher_s / s:.1f} |")  # fmt: skip
    print("int8 top-1 agreement with fp32:")
    for name in sorted(p.parent.name for p in (ROOT / "exports").glob("*/export.json")) or [
        "dkd_b4"
    ]:  # the demo's exports (configs/demo-full.yaml adds an fbank student)
        print("  " + demo_agreement(name))
    print("goal: the fbank student's ONNX or int8 form >= 10x faster than the teacher, int8 "
          "agreement within 1 point of fp32")  # fmt: skip


if __name__ == "__main__":
    main()
