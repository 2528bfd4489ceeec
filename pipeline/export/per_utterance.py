"""An ONNX graph that runs another one on each utterance of a batch alone.

Dynamic int8 quantisation (onnxruntime) measures each activation's range over the whole tensor
it quantises: over a padded batch, an utterance's outputs would depend on the padding and on
its neighbours (a louder one widens every range). Wrapped by :func:`per_utterance`, the model
runs once per utterance on exactly its own samples (an ONNX ``Loop`` over the batch), so every
range is the utterance's own: its outputs are those it gets alone, however it is batched.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.nn.frames import FrameSpec

INPUTS = ("wav", "lengths")  # (B, S) float32 zero-padded 16 kHz, (B,) int64 samples
OUTPUTS = ("outputs", "frame_lengths")  # (B, T, D), (B,) int64


def _ints(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _frame_count(frames: FrameSpec) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes giving ``batch/frames`` (1,): the frames of the padded width, as the unwrapped
    model's time axis has them (:meth:`FrameSpec.num_frames` of ``wav``'s width)."""
    nodes = [helper.make_node("Shape", ["wav"], ["batch/n0"], start=1, end=2)]
    consts = [_ints("batch/zero", [0]), _ints("batch/one", [1])]
    for i, (k, s) in enumerate(zip(frames.kernels, frames.strides, strict=True)):
        consts += [_ints(f"batch/k{i}", [k]), _ints(f"batch/s{i}", [s])]
        nodes += [
            helper.make_node("Sub", [f"batch/n{i}", f"batch/k{i}"], [f"batch/a{i}"]),
            helper.make_node("Div", [f"batch/a{i}", f"batch/s{i}"], [f"batch/b{i}"]),
            helper.make_node("Add", [f"batch/b{i}", "batch/one"], [f"batch/c{i}"]),
            helper.make_node("Max", [f"batch/c{i}", "batch/zero"], [f"batch/n{i + 1}"]),
        ]  # fmt: skip
    nodes.append(helper.make_node("Identity", [f"batch/n{len(frames.kernels)}"], ["batch/frames"]))
    return nodes, consts


def _body(model: onnx.ModelProto) -> onnx.GraphProto:
    """The loop body: utterance ``i`` cut to its length, the model, its outputs padded to
    ``batch/frames`` (zeros on padded frames)."""
    inner = {name: f"utt/{name}" for name in (*INPUTS, *OUTPUTS)}
    nodes = []
    for node in model.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [inner.get(x, x) for x in copy.input]
        copy.output[:] = [inner.get(x, x) for x in copy.output]
        nodes.append(copy)
    consts = [_ints("utt/zero", [0]), _ints("utt/one", [1]), _ints("utt/axes", [0, 1]),
              _ints("utt/no_pad", [0, 0, 0])]  # fmt: skip
    make = helper.make_node
    cut = [
        make("Unsqueeze", ["utt/i", "utt/zero"], ["utt/index"]),
        make("Add", ["utt/index", "utt/one"], ["utt/next"]),
        make("Gather", ["lengths", "utt/index"], ["utt/lengths"]),
        make("Concat", ["utt/index", "utt/zero"], ["utt/starts"], axis=0),
        make("Concat", ["utt/next", "utt/lengths"], ["utt/ends"], axis=0),
        make("Slice", ["wav", "utt/starts", "utt/ends", "utt/axes"], ["utt/wav"]),
    ]
    pad = [
        make("Shape", ["utt/outputs"], ["utt/frames"], start=1, end=2),
        make("Sub", ["batch/frames", "utt/frames"], ["utt/missing"]),
        make("Concat", ["utt/no_pad", "utt/zero", "utt/missing", "utt/zero"], ["utt/pads"], axis=0),
        make("Pad", ["utt/outputs", "utt/pads"], ["utt/padded"]),
        make("Squeeze", ["utt/padded", "utt/zero"], ["utt/out"]),
        make("Squeeze", ["utt/frame_lengths", "utt/zero"], ["utt/out_lengths"]),
        make("Identity", ["utt/go"], ["utt/go_on"]),
    ]
    constants = [make("Constant", [], [t.name], value=t) for t in consts]
    dtype = model.graph.output[0].type.tensor_type.elem_type
    return helper.make_graph(
        [*constants, *cut, *nodes, *pad],
        "one_utterance",
        [helper.make_tensor_value_info("utt/i", TensorProto.INT64, []),
         helper.make_tensor_value_info("utt/go", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("utt/go_on", TensorProto.BOOL, []),
         helper.make_tensor_value_info("utt/out", dtype, None),
         helper.make_tensor_value_info("utt/out_lengths", TensorProto.INT64, None)],
    )  # fmt: skip


def per_utterance(model: onnx.ModelProto, frames: FrameSpec) -> onnx.ModelProto:
    """``model`` (inputs :data:`INPUTS`, outputs :data:`OUTPUTS`) wrapped so that each utterance
    of a batch runs alone, on its own ``lengths[b]`` samples. Same inputs and outputs; frames
    past an utterance's length are zero. ``frames`` is the model's frame arithmetic (its time
    axis is ``frames.num_frames`` of the padded width).

    Raises:
        ValueError: ``model`` does not have those inputs and outputs.
    """
    graph = model.graph
    names = (tuple(i.name for i in graph.input), tuple(o.name for o in graph.output))
    if names != (INPUTS, OUTPUTS):
        raise ValueError(f"per_utterance wraps a model of inputs {INPUTS} and outputs {OUTPUTS}")
    count, consts = _frame_count(frames)
    loop = [
        helper.make_node("Shape", ["wav"], ["batch/size"], start=0, end=1),
        helper.make_node("Squeeze", ["batch/size"], ["batch/trips"]),
        helper.make_node("Constant", [], ["batch/go"],
                         value=helper.make_tensor("go", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["batch/trips", "batch/go"], list(OUTPUTS), body=_body(model)),
    ]  # fmt: skip
    wrapped = helper.make_graph(
        [*count, *loop], graph.name, list(graph.input), list(graph.output),
        [*graph.initializer, *consts],
    )  # fmt: skip
    result = helper.make_model(
        wrapped, opset_imports=list(model.opset_import), ir_version=model.ir_version
    )
    onnx.checker.check_model(result)
    return result
