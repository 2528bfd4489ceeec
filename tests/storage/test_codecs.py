"""Logit codecs: the per-frame shift (k-means distance logits in the thousands), the exact
projection codec on a cosine head, the learned pq codec's error budget on the KD and DKD
losses, its byte groups, batched decoding, and the argmax restored from argmax targets."""

import numpy as np
import pytest
import torch

from pipeline.losses import dkd_loss, kd_loss
from pipeline.teacher.head import ClusterHead
from pipeline.teacher.kmeans import KMeansHead
from storage.codecs import (
    CODECS,
    FullConfig,
    PQConfig,
    ProjectionConfig,
    codec_from_header,
    repair_argmax,
)
from storage.vq import byte_groups


def _cosine_logits(n, classes=100, proj=16, seed=0):
    """Logits of a random cosine head (HuBERT's), over features of some structure."""
    torch.manual_seed(0)
    head = ClusterHead(32, proj, classes, 0.1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g) @ torch.randn(
        4, 32, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        return head(x + 0.3 * torch.randn(n, 32, generator=g))


def _fitted(kind, cfg, sample):
    codec = CODECS[kind](cfg)
    codec.fit(sample, seed=0)
    return codec


def _centred(x):
    return x - x.mean(-1, keepdim=True)


CODEC_CASES = [("full", FullConfig("float16")), ("full", FullConfig("float32")),
               ("projection", ProjectionConfig()), ("pq", PQConfig(bytes=24))]  # fmt: skip


@pytest.mark.parametrize(("kind", "cfg"), CODEC_CASES)
def test_every_codec_ignores_a_per_frame_shift_of_thousands(kind, cfg):
    """k-means distance logits, -||x - c||^2, run into the thousands: every codec works on
    logits shifted per frame, so adding 10^4 to a frame changes nothing it stores."""
    g = torch.Generator().manual_seed(0)
    centroids = 30 * torch.randn(50, 24, generator=g)
    x = 30 * torch.randn(600, 24, generator=g)
    logits = KMeansHead(centroids, "distance", 1.0)(x)
    assert float(logits.abs().max()) > 1_000
    codec = _fitted(kind, cfg, logits[:400]) if kind != "full" else CODECS[kind](cfg)
    test = logits[400:]
    plain = codec.decode(codec.encode(test))
    shifted = codec.decode(codec.encode(test + 1e4))
    span = float(_centred(test).abs().max())  # float16 coordinates are exact to 1e-3 of it
    torch.testing.assert_close(_centred(plain), _centred(shifted), rtol=0, atol=2e-3 * span)
    if kind == "full":  # the classes softmax sees: exact but for float16's rounding of each
        ref = test - test.amax(-1, keepdim=True)  # shifted value v, at most |v| * 2^-11
        top = ref > -30
        assert bool(((plain - ref)[top].abs() <= ref[top].abs() * 2**-11 + 1e-6).all())


def test_full_float16_keeps_the_top_of_a_distance_frame_exact():
    """Cast as they are, distance logits of thousands lose whole units in float16 (its step is
    2 to 32 there), enough to reorder near-top classes; shifted by the frame's maximum first,
    the classes that carry the softmax are exact to a few thousandths."""
    g = torch.Generator().manual_seed(1)
    x = 20 * torch.randn(200, 24, generator=g)  # squared distances up to ~20000
    logits = KMeansHead(x[:60] + torch.randn(60, 24, generator=g), "distance", 1.0)(x)
    codec = CODECS["full"](FullConfig("float16"))
    decoded = codec.decode(codec.encode(logits))
    exact = logits - logits.amax(-1, keepdim=True)
    near_top = exact > -30  # what softmax sees at tau <= 4
    assert float((decoded - exact)[near_top].abs().max()) < 5e-3
    assert float(logits.abs().max()) < 65504  # within float16's range even unshifted
    unshifted = logits.half().float() - logits.half().float().amax(-1, keepdim=True)
    assert float((unshifted - exact)[near_top].abs().max()) > 0.5  # the problem the shift solves


def test_projection_is_exact_for_a_cosine_head():
    logits = _cosine_logits(1_500)
    codec = _fitted("projection", ProjectionConfig(), logits[:1_000])
    assert codec.layout["rank"] == 16 and codec.bytes_per_frame(100) == 32  # final_dim, float16
    decoded = codec.decode(codec.encode(logits[1_000:]))
    assert float((_centred(decoded) - _centred(logits[1_000:])).abs().max()) < 1e-2


def _relative_errors(exact, decoded, targets):
    """Worst relative error of the KD and DKD loss values over tau 1, 2, 4, against a student
    that is the teacher plus N(0, 1) noise."""
    student = (exact + torch.randn(exact.shape, generator=torch.Generator().manual_seed(3)))[None]
    mask = torch.ones(1, len(exact), dtype=torch.bool)
    worst = 0.0
    for tau in (1.0, 2.0, 4.0):
        kd = [float(kd_loss(student, t[None], mask, tau=tau)["kd"]) for t in (exact, decoded)]
        dkd = [float(dkd_loss(student, t[None], targets[None], mask, alpha=1.0, beta=4.0,
                              tau=tau)["dkd"]) for t in (exact, decoded)]  # fmt: skip
        worst = max(worst, abs(kd[1] / kd[0] - 1), abs(dkd[1] / dkd[0] - 1))
    return worst


def test_pq_keeps_the_kd_and_dkd_losses_within_one_percent():
    logits = _cosine_logits(6_000)
    codec = _fitted("pq", PQConfig(bytes=16), logits[:4_000])
    test = logits[4_000:]
    decoded = codec.decode(codec.encode(test))
    assert codec.encode(test)["codes"].dtype == torch.uint8 and codec.bytes_per_frame(100) == 16
    assert _relative_errors(test, decoded, test.argmax(-1)) < 0.01
    assert float((decoded.argmax(-1) == test.argmax(-1)).float().mean()) > 0.9


def test_pq_decodes_a_padded_batch_as_frame_by_frame_and_travels_through_the_header():
    logits = _cosine_logits(900)
    codec = _fitted("pq", PQConfig(bytes=8), logits[:600])
    codes = codec.encode(logits[600:].reshape(3, 100, -1))["codes"]  # (B, T, bytes)
    again = codec_from_header(codec.header(), codec.constants)
    batched = again.decode({"codes": codes})
    frames = codec.decode({"codes": codes.reshape(300, -1)}).reshape(3, 100, -1)
    assert batched.shape == (3, 100, 100)
    torch.testing.assert_close(batched, frames)
    assert set(codec.header()) == {"name", "bytes", "groups"}


def test_byte_groups_spend_every_byte_and_give_a_strong_component_its_own():
    variances = np.array([1000.0, 900.0, 10.0, 5.0, 2.0, 1.0, 0.5, 0.1] + [1e-6] * 8)
    sizes = byte_groups(variances, 4)
    assert len(sizes) == 4 and sizes[0] == 1 and sum(sizes) <= 8  # not the noise components
    assert byte_groups(variances, 12)[:2] == [1, 1]  # with bytes to spare, each strong one alone


def test_the_argmax_is_restored_from_argmax_targets():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 1.0, 0.0]])
    repaired = repair_argmax(logits, torch.tensor([2, 0]))
    assert repaired.argmax(-1).tolist() == [2, 0]
    assert torch.equal(repaired[1], logits[1]) and repaired[0, 2] > 2.0
    assert torch.equal(repaired[0, :2], logits[0, :2])  # only the target moves
    large = torch.tensor([[20000.0, 30000.0, 30000.0]])  # float32 steps by 0.002 here
    assert repair_argmax(large, torch.tensor([2])).argmax(-1).tolist() == [2]
