"""How an exported form is loaded back and compared with the PyTorch student it came from:
the largest difference on raw audio of several lengths, and, for int8 forms, how often their
top-1 cluster is the fp32 student's over a corpus split."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from pipeline.export.forms import kind_of
from pipeline.export.hf import hf_runner
from pipeline.export.inference import Inference
from pipeline.export.onnx import example, onnx_runner

Runner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

LENGTHS = ((1.0, 0.6), (2.37,), (0.5, 0.9, 3.1))  # seconds per utterance of each test batch


def load_form(form: str, path: Path) -> Runner:
    """``(wav, lengths) -> (outputs, frame_lengths)`` of an exported ``form``."""
    if form == "hf":
        return hf_runner(path)
    if form == "onnx":
        return onnx_runner(path)
    raise ValueError(f"unknown export form {form!r}")


def check_forms(
    reference: Inference, forms: dict[str, str], folder: Path, tolerance: float
) -> tuple[dict[str, dict], dict[str, Runner]]:
    """``{form: {"path", "max_abs_diff"}}`` for each written form (``forms`` as
    :func:`~pipeline.export.forms.write_forms` returns them), each loaded back from ``folder``
    once, and the loaded forms (for the int8 agreement).

    Raises:
        ValueError: an fp32 form differs by more than ``tolerance`` (int8 forms may: their
            measure is :func:`agreement`).
    """
    record, runners = {}, {}
    for form, file in forms.items():
        runners[form] = load_form(kind_of(form), folder / file)
        diff = max_difference(reference, runners[form])
        if not form.endswith("-int8") and diff > tolerance:
            raise ValueError(f"the {form} export differs from the student by {diff:.2e} "
                             f"(> tolerance {tolerance:g}); nothing was written")  # fmt: skip
        record[form] = {"path": file, "max_abs_diff": diff}
    return record, runners


def _valid(outputs: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    return torch.arange(outputs.shape[1])[None] < frame_lengths[:, None]


@torch.no_grad()
def max_difference(reference: Inference, run: Runner) -> float:
    """Largest absolute difference of ``run`` from ``reference`` over the valid frames of
    noise batches of :data:`LENGTHS` (odd lengths, padding, one to three utterances).

    Raises:
        ValueError: the frame counts differ.
    """
    worst = 0.0
    for seconds in LENGTHS:
        wav, lengths = example(seconds)
        want, want_frames = reference(wav, lengths)
        got, got_frames = run(wav, lengths)
        if not torch.equal(want_frames, got_frames.to(want_frames.dtype)):
            raise ValueError(
                f"frame counts differ: {got_frames.tolist()} != {want_frames.tolist()}"
            )
        valid = _valid(want, want_frames)
        worst = max(worst, float((want - got).abs()[valid].max()))
    return worst


@torch.no_grad()
def agreement(
    reference: Inference,
    runs: dict[str, Runner],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, dict[str, float]]:
    """Per form, over every valid frame of ``batches`` of ``(wav, lengths)``: ``top1_agreement``
    with the reference's argmax (logit students) or the mean ``cosine`` similarity of the
    outputs (feature students), and ``frames``."""
    sums = {name: 0.0 for name in runs}
    frames = 0
    for wav, lengths in batches:
        want, frame_lengths = reference(wav, lengths)
        valid = _valid(want, frame_lengths)
        frames += int(valid.sum())
        for name, run in runs.items():
            got = run(wav, lengths)[0]
            if reference.logits:
                sums[name] += float((got.argmax(-1) == want.argmax(-1))[valid].sum())
            else:
                sums[name] += float(torch.cosine_similarity(got, want, dim=-1)[valid].sum())
    if not frames:
        raise ValueError("no frames to measure agreement on")
    key = "top1_agreement" if reference.logits else "cosine"
    return {name: {key: round(s / frames, 6), "frames": frames} for name, s in sums.items()}
