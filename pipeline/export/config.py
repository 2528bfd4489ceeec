"""The `export` section of ``params.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.config import check, positive

FORMATS = ("hf", "onnx")


@dataclass(frozen=True)
class ExportConfig:
    """Attributes:
    formats: what to write, of ``hf`` (a transformers model directory that loads with
        transformers alone, with an s3prl upstream beside it) and ``onnx``.
    quantize: ``int8`` also writes an int8 form of the ONNX student (dynamic quantisation of
        the LSTM and linear layers, for CPUs; each utterance of a batch runs alone, so its
        outputs never depend on the batch); ``""`` writes none.
    agreement_split: the split (or subset) whose frames measure how often a quantised form's
        top-1 cluster is the fp32 student's; ``""`` skips it.
    tolerance: the largest difference an fp32 form may show against the PyTorch student on
        test audio (an export that differs more is an error, not an output).
    batch_seconds: padded audio per batch when measuring agreement (the figure does not depend
        on it: every form's outputs are the same however utterances are batched).
    threads: CPU threads.
    seeds: student name -> the training seed whose weights are exported; a student not named
        here: the first seed it declares (never the best on a test set: that would report a
        selected model's scores as any model's).
    """

    formats: list[str] = field(default_factory=lambda: ["hf", "onnx"])
    quantize: str = ""
    agreement_split: str = "test"
    tolerance: float = 1e-4
    batch_seconds: float = 60.0
    threads: int = 2
    seeds: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in FORMATS]
        check(not bad and bool(self.formats), "formats", f"each one of {FORMATS}, got {bad}")
        check(self.quantize in ("", "int8"), "quantize", f'"" or int8, not {self.quantize!r}')
        check(not self.quantize or "onnx" in self.formats, "quantize",
              "the int8 form is of onnx: add it to formats")  # fmt: skip
        positive(self, "tolerance", "batch_seconds", "threads")
