"""The ONNX form of a student (dynamic batch and time axes), and an int8 copy of it (dynamic
quantisation of the LSTM and linear layers, for CPUs) that runs each utterance of a batch
alone, so that its outputs never depend on the batch.

The ONNX graph comes from torch's TorchScript-based exporter (``dynamo=False``), deprecated
since torch 2.9: the dynamo exporter (``dynamo=True``, torch 2.13) freezes the time axis of a
bidirectional LSTM run as this project runs it (the backward direction on each sequence
reversed within its length), so the graph works for the example's length only
(pytorch/pytorch#191855; the same pattern exports whole with ``dynamo=False``; rerun
``bench/onnx_dynamo.py`` after a torch upgrade). Every form is checked against PyTorch on
several batch sizes and lengths before it is kept.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.core.io import atomic_file
from pipeline.export.inference import Inference
from pipeline.export.per_utterance import per_utterance
from pipeline.nn.frames import FrameSpec

AXES = {"wav": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
        "outputs": {0: "batch", 1: "frames"}, "frame_lengths": {0: "batch"}}  # fmt: skip


def example(seconds: tuple[float, ...] = (1.0, 0.6)) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of noise at 16 kHz, ``(wav (B, S), lengths (B,))``."""
    g = torch.Generator().manual_seed(0)
    wavs = [0.1 * torch.randn(int(16_000 * s), generator=g) for s in seconds]
    lengths = torch.tensor([len(w) for w in wavs])
    return torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths


@contextmanager
def traceable():
    """No grad, and Transformer layers on their plain path: the fused inference kernel
    (``aten::_transformer_encoder_layer_fwd``) has no ONNX form and would freeze a trace."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def export_onnx(student: nn.Module, path: Path) -> Path:
    """``path`` (``.onnx``): inputs ``wav (B, S)`` float32 and ``lengths (B,)`` int64;
    outputs ``outputs (B, T, D)`` (logits, or the last layer) and ``frame_lengths (B,)``."""
    model = Inference(student).eval()
    with traceable(), warnings.catch_warnings():
        # shape warnings of the tracer (the LSTM's batch size, Python checks of sizes): the
        # exported graph is checked at several batch sizes and lengths (pipeline.export.checks)
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            model, example(), str(path), input_names=["wav", "lengths"],
            output_names=["outputs", "frame_lengths"], dynamic_axes=AXES, opset_version=17,
            dynamo=False,
        )  # fmt: skip
    return path


def quantize_onnx(source: Path, path: Path, frames: FrameSpec) -> Path:
    """An int8 copy of the ONNX student at ``source``: LSTM, MatMul and Gemm weights in int8,
    activations quantised on the fly (onnxruntime's dynamic quantisation), each utterance run
    alone (:func:`~pipeline.export.per_utterance.per_utterance`): an activation's range is
    the utterance's own, never its neighbours' or the padding's. ``frames``: the student's."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process: no gain here
    try:
        with atomic_file(path) as tmp:
            quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm", "LSTM"])  # fmt: skip
            onnx.save(per_utterance(onnx.load(str(tmp)), frames), str(tmp))
    finally:
        logging.getLogger().setLevel(level)
    return path


def onnx_runner(path: Path):
    """``(wav, lengths) -> (outputs, frame_lengths)`` numpy arrays, through onnxruntime."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])  # fmt: skip

    def run(wav: torch.Tensor, lengths: torch.Tensor):
        feed = {"wav": wav.numpy().astype(np.float32), "lengths": lengths.numpy().astype(np.int64)}
        return tuple(torch.from_numpy(x) for x in session.run(None, feed))

    return run
