"""Which files an export folder holds, and writing them."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pipeline.export.hf import export_hf
from pipeline.export.onnx import export_onnx, quantize_onnx

FILES = {"hf": "hf", "onnx": "model.onnx"}
INT8 = {"onnx": "model.int8.onnx"}


def kind_of(form: str) -> str:
    """The format of a form name: ``onnx-int8`` -> ``onnx``."""
    return form.removesuffix("-int8")


def write_forms(student: nn.Module, formats: list[str], quantize: str, folder: Path) -> dict:
    """Write each of ``formats`` (and, with ``quantize: int8``, an int8 copy of the ONNX form)
    into ``folder``; returns ``{form: file name}`` (``onnx-int8``, ...)."""
    forms = {}
    for form in formats:
        path = folder / FILES[form]
        if form == "hf":
            export_hf(student, path)
        else:
            export_onnx(student, path)
        forms[form] = FILES[form]
        if quantize and form in INT8:
            quantize_onnx(path, folder / INT8[form], student.frames)
            forms[f"{form}-int8"] = INT8[form]
    return forms
