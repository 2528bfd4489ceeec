"""Does torch's dynamo ONNX exporter give a student graph that runs at other batch sizes and
lengths? It is why `pipeline export` stays on ``dynamo=False`` (docs/export.md): this prints, per
student checkpoint, the largest difference to PyTorch at the example's shape and at another.

Needs onnxscript, which the lock leaves out (nothing else uses it):

    pip install onnxscript   # or: pip install --target /tmp/oxs onnxscript; PYTHONPATH=/tmp/oxs
    .venv/bin/python bench/onnx_dynamo.py students/dkd_b4/model.pt [more model.pt ...]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch

from pipeline.export.inference import Inference
from pipeline.export.onnx import example, onnx_runner, traceable
from pipeline.students.checkpoint import load_student

SHAPES = ((1.0, 0.6), (2.3, 0.9, 1.7))  # the exporter's example, then another batch and length


def check(checkpoint: Path, folder: Path) -> None:
    model = Inference(load_student(checkpoint)[0]).eval()
    path = folder / f"{checkpoint.parent.name}.onnx"
    batch, samples = torch.export.Dim("batch"), torch.export.Dim("samples", min=800)
    try:
        with traceable(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example(SHAPES[0]), str(path), dynamo=True,
                              input_names=["wav", "lengths"],
                              output_names=["outputs", "frame_lengths"],
                              dynamic_shapes=({0: batch, 1: samples}, {0: batch}))  # fmt: skip
    except Exception as e:  # noqa: BLE001 - report any exporter failure and go on
        print(f"{checkpoint}: export failed: {type(e).__name__}: {str(e).splitlines()[0]}")
        return
    run = onnx_runner(path)
    for seconds in SHAPES:
        wav, lengths = example(seconds)
        with torch.no_grad():
            expected = model(wav, lengths)[0]
        try:
            got = run(wav, lengths)[0]
            print(f"{checkpoint} {seconds}: max |diff| {float((got - expected).abs().max()):.2e}")
        except Exception as e:  # noqa: BLE001 - onnxruntime's refusal is the finding
            print(f"{checkpoint} {seconds}: onnxruntime failed: {str(e).splitlines()[0][:220]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help="students' model.pt")
    args = parser.parse_args()
    import onnxscript

    print(f"torch {torch.__version__}, onnxscript {onnxscript.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        for checkpoint in args.checkpoints:
            check(checkpoint, Path(folder))


if __name__ == "__main__":
    main()
