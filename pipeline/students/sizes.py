"""How big a student is, part by part, for a given cache (``pipeline student-info``)."""

from __future__ import annotations

from pathlib import Path

from pipeline.nn.frames import HUBERT_FRAMES, FrameSpec
from pipeline.students.base import StudentConfig
from pipeline.students.checkpoint import build_student


def describe_sizes(
    students: dict[str, StudentConfig], cache: str | Path, classes: int | None
) -> list[str]:
    """One line per student: its parameters in total and per part, for the cache at ``cache``
    when there is one (its C, frame stack, conv stack and features), else HuBERT's frame stack
    and ``classes`` (default 500)."""
    from storage import read_frontend, read_header
    from storage.header import HEADER
    from storage.location import files

    frames, num_classes, teacher_frontend, dims = HUBERT_FRAMES, classes or 500, None, {}
    if HEADER in files(cache):
        header = read_header(cache)
        frames = FrameSpec(tuple(header.frame_kernels), tuple(header.frame_strides))
        num_classes = classes or header.num_classes
        teacher_frontend = read_frontend(cache)
        dims = {f: spec["dim"] for f, spec in header.features.items()}
    lines = []
    for name, cfg in students.items():
        model = build_student(cfg, num_classes, frames, teacher_frontend, dims)
        parts = {
            part: sum(p.numel() for p in module.parameters())
            for part, module in model.named_children()
            if any(True for _ in module.parameters())
        }
        total = sum(parts.values())
        detail = ", ".join(f"{part} {n / 1e6:.2f}M" for part, n in parts.items())
        lines.append(
            f"{name}: {total:,} parameters ({total / 1e6:.2f}M; C={num_classes}: {detail})"
        )
    return lines
