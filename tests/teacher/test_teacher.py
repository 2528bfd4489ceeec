"""The teacher: exact batching, frame counts, head math, fingerprint."""

import torch
import torch.nn.functional as F
from conftest import tiny_params

from pipeline.core.config import section
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.teacher.sources import build_teacher


def _teacher(seed=0):
    params = tiny_params()
    params["cache_teacher"]["teacher"]["random"]["seed"] = seed
    return build_teacher(section(params, "cache_teacher", CacheTeacherConfig).teacher)


def test_batched_logits_equal_one_at_a_time():
    teacher = _teacher()
    g = torch.Generator().manual_seed(1)
    wavs = [0.1 * torch.randn(n, generator=g) for n in (24_000, 16_123, 5_000, 400)]
    batched = teacher.logits(wavs)
    for wav, got in zip(wavs, batched, strict=True):
        alone = teacher.logits([wav])[0]
        assert (
            got.shape == alone.shape == (teacher.frames.num_frames(len(wav)), teacher.num_classes)
        )
        torch.testing.assert_close(got, alone, rtol=1e-4, atol=1e-4)


def test_frame_count_follows_the_conv_stack():
    teacher = _teacher()
    for n in (400, 719, 720, 16_000, 16_001):
        features = teacher.encoder.feature_extractor(torch.zeros(1, n))
        assert features.shape[-1] == teacher.frames.num_frames(n)
    assert teacher.frames.hop == 320 and teacher.frames.frame_rate(16_000) == 50.0


def test_head_is_cosine_over_temperature():
    teacher = _teacher()
    x = torch.randn(5, teacher.head.final_proj.in_features)
    proj = teacher.head.final_proj(x)
    expected = F.cosine_similarity(proj[:, None, :], teacher.head.label_embs[None], dim=-1) / 0.1
    torch.testing.assert_close(teacher.head(x), expected, rtol=1e-5, atol=1e-5)


def test_fingerprint_is_stable_and_tracks_weights():
    assert _teacher(0).fingerprint() == _teacher(0).fingerprint()
    assert _teacher(0).fingerprint() != _teacher(1).fingerprint()
    assert "untrained" in _teacher(0).description
