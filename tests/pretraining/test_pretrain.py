"""`pipeline pretrain-teacher`: MFCC targets aligned with HuBERT frames, HuBERT masking, a teacher
directory the hf: source loads with its head, and exact resume after an interruption."""

import json

import pytest
import torch
from conftest import tiny_params
from safetensors.torch import load_file

from pipeline.audio.features import mfcc_features
from pipeline.core.config import from_dict, section
from pipeline.nn.frames import HUBERT_FRAMES
from pipeline.pretraining.hubert import PretrainConfig, span_mask
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.sources import build_teacher
from stages import pretrain_teacher


@pytest.mark.parametrize("samples", [400, 719, 720, 16_000, 48_123])
def test_mfcc_frames_match_the_conv_stack(samples):
    frames = int(HUBERT_FRAMES.num_frames(torch.tensor([samples]))[0])
    feats = mfcc_features(torch.randn(samples, generator=torch.Generator().manual_seed(0)), frames)
    assert feats.shape == (frames, 39)
    assert torch.allclose(feats.mean(0), torch.zeros(39), atol=1e-4)


def test_span_mask_follows_hubert_masking():
    lengths = torch.tensor([500, 120, 7])
    mask = span_mask(lengths, 0.8, 10, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 500)
    assert not mask[1, 120:].any() and not mask[2, 7:].any()  # never on padding
    # 0.8 * 500 / 10 = 40 spans of 10 frames: overlaps make the covered share below 80%.
    assert 0.4 < mask[0].float().mean() <= 0.8
    assert mask[2].any()  # at least one span even when shorter than a span
    again = span_mask(lengths, 0.8, 10, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def _configs(steps=4):
    params = tiny_params()
    params["pretrain_teacher"]["steps"] = steps
    cfg = section(params, "pretrain_teacher", PretrainConfig)
    return params, cfg, cfg.model


def test_pretrained_teacher_directory_loads_as_hf_source(tiny_corpus, tmp_path):
    params, cfg, size = _configs()
    out = tmp_path / "teacher"
    summary = pretrain_teacher.run(cfg, tiny_corpus, out)
    info = json.loads((out / "teacher.json").read_text())
    assert info["num_classes"] == size.num_classes and info["corpus"]["fingerprint"]
    assert 0.0 <= summary["dev"]["masked_accuracy"] <= 1.0
    assert load_file(out / pretrain_teacher.CENTROIDS)["centroids"].shape == (size.num_classes, 39)
    assert load_file(out / "model.safetensors")["feature_projection.projection.weight"].dtype == (
        torch.float16
    )  # shipped in fp16
    assert not (tmp_path / "teacher.work").exists()

    tcfg = dict(params["cache_teacher"]["teacher"], source=f"hf:{out}")
    tcfg.pop("random")
    teacher = build_teacher(from_dict(TeacherConfig, tcfg, "teacher"))
    assert teacher.head is not None and teacher.num_classes == size.num_classes
    logits, targets, _ = teacher.outputs([torch.randn(16_000)])[0]
    assert logits.dtype == torch.float32 and logits.shape == (49, size.num_classes)


def test_interrupted_pretraining_resumes_exactly(tiny_corpus, tmp_path, monkeypatch):
    _, cfg, _ = _configs(steps=4)
    pretrain_teacher.run(cfg, tiny_corpus, tmp_path / "whole")

    calls = {"n": 0}
    clip = torch.nn.utils.clip_grad_norm_

    def dies_at_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a kill after the step-2 checkpoint
        return clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        pretrain_teacher.run(cfg, tiny_corpus, tmp_path / "resumed")
    assert not (tmp_path / "resumed").exists()  # nothing that looks complete
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    pretrain_teacher.run(cfg, tiny_corpus, tmp_path / "resumed")
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
