"""Stage `export@<name>`: a trained student in the forms used outside the project, each
loaded back and checked against the PyTorch student before the folder is kept.

Output folder (written whole, then renamed into place)::

    hf/                  config.json, model.safetensors, preprocessor_config.json
    model.onnx           model.int8.onnx       (the int8 form with quantize: int8)
    model.ts.pt
    export.json          per form: its file and max |difference| from PyTorch on test audio;
                         int8 top-1 agreement with fp32 on a split; whether it streams
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline.core.io import atomic_dir, write_json
from pipeline.core.locks import output_lock
from pipeline.corpus.manifest import audio_batches, read_manifest
from pipeline.export.checks import agreement, check_forms
from pipeline.export.config import ExportConfig
from pipeline.export.forms import write_forms
from pipeline.export.inference import Inference
from pipeline.export.streaming import streaming_info
from pipeline.students.checkpoint import load_student, training_seed

log = logging.getLogger(__name__)


def run(
    cfg: ExportConfig, checkpoint: Path, out: Path, manifest: Path | None, seed: int | None = None
) -> dict:
    """Export the student of ``checkpoint`` (its training seed ``seed``, by default its first)
    into ``out``; returns what ``export.json`` holds.

    Raises:
        ValueError: an fp32 form differs from the student by more than ``cfg.tolerance``.
    """
    torch.set_num_threads(cfg.threads)
    student, ckpt = load_student(checkpoint, seed)
    reference = Inference(student).eval()
    with output_lock(out), atomic_dir(out, "export") as tmp:
        forms = write_forms(student, cfg.formats, cfg.quantize, tmp)
        checked, runners = check_forms(reference, forms, tmp, cfg.tolerance)
        record = {
            "checkpoint": str(checkpoint),
            "seed": training_seed(ckpt, seed, checkpoint),
            "outputs": reference.output_name,
            "forms": checked,
            "streaming": streaming_info(student),
        }
        int8 = {form: run for form, run in runners.items() if form.endswith("-int8")}
        if int8:
            record["int8_agreement"] = int8_agreement(cfg, reference, int8, manifest)
        write_json(tmp / "export.json", record)
    return record


def int8_agreement(cfg: ExportConfig, reference: Inference, int8: dict, manifest: Path | None):
    """How often each int8 form's top-1 cluster is the fp32 student's, on the frames of
    ``cfg.agreement_split``; None (with a warning) without a manifest or a split."""
    if not cfg.agreement_split or manifest is None or not Path(manifest).is_file():
        log.warning("no manifest or no export.agreement_split: int8 agreement not measured")
        return None
    utts = [u for u in read_manifest(manifest) if u.belongs_to(cfg.agreement_split)]
    if not utts:
        raise ValueError(f"{manifest}: no utterances in split {cfg.agreement_split!r} "
                         "(export.agreement_split)")  # fmt: skip
    batches = (batch[1:] for batch in audio_batches(utts, manifest, cfg.batch_seconds))
    return {"split": cfg.agreement_split, "utterances": len(utts),
            **agreement(reference, int8, batches)}  # fmt: skip
