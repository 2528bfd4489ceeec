"""A student as a transformers model directory that loads with transformers alone:
``config.json`` (its recipe, with ``auto_map``), ``model.safetensors``, the modelling code it
needs (:mod:`pipeline.nn.modeling_hubert_kd` and the ``pipeline.nn`` modules it imports, copied
by transformers' own ``save_pretrained``), ``preprocessor_config.json`` (raw 16 kHz waveforms)
and ``s3prl/hubert_kd/``, the student as an upstream of SUPERB's toolkit::

    model = AutoModel.from_pretrained("exports/dkd_b4/hf", trust_remote_code=True)
    model.push_to_hub("you/hubert-kd-dkd-b4")
"""

from __future__ import annotations

import shutil
from pathlib import Path

from torch import nn

from pipeline.core.progress import quiet_transformers
from pipeline.nn.frames import SAMPLE_RATE
from pipeline.students.checkpoint import recipe

S3PRL = Path(__file__).with_name("s3prl_upstream")


def export_hf(student: nn.Module, out: Path) -> None:
    """Write ``student`` (as :func:`~pipeline.students.checkpoint.load_student` gives it) as a
    transformers model directory ``out``."""
    from transformers import Wav2Vec2FeatureExtractor

    from pipeline.nn.modeling_hubert_kd import HubertKDConfig, HubertKDModel

    model = HubertKDModel(HubertKDConfig(**recipe(student)))
    model.student.load_state_dict(student.state_dict())
    with quiet_transformers():
        model.save_pretrained(out)
    Wav2Vec2FeatureExtractor(  # raw waveforms: the student normalises them itself if it must
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=False,
        return_attention_mask=True,
    ).save_pretrained(out)  # fmt: skip
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(S3PRL, out / "s3prl" / "hubert_kd", ignore=skip)


def hf_runner(path: Path):
    """``(wav (B, S), lengths (B,)) -> (outputs (B, T, D), frame lengths (B,))`` of the exported
    directory ``path``, loaded as anyone loads it (``AutoModel``, with its own code): logits,
    or the last layer of a student that predicts none."""
    import torch
    from transformers import AutoModel

    with quiet_transformers():
        model = AutoModel.from_pretrained(str(path), trust_remote_code=True).eval()

    def run(wav: torch.Tensor, lengths: torch.Tensor):
        mask = (torch.arange(wav.shape[1])[None] < lengths[:, None]).long()
        out = model(input_values=wav, attention_mask=mask)
        outputs = out.logits if out.logits is not None else out.last_hidden_state
        return outputs, model._get_feat_extract_output_lengths(lengths)

    return run
