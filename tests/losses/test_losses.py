"""Property tests of the losses against slow, independent references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.losses import LOSSES, ce_loss, dkd_loss, kd_loss


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _kl(p, q):
    return float(np.sum(p * (np.log(p) - np.log(q))))


def slow_dkd(s, t, target, alpha, beta, tau):
    """Per-frame DKD written from the paper's definitions with numpy loops."""
    ps, pt = _softmax(s / tau), _softmax(t / tau)
    bs = np.array([ps[target], 1 - ps[target]])
    bt = np.array([pt[target], 1 - pt[target]])
    keep = [c for c in range(len(s)) if c != target]
    hs, ht = _softmax(s[keep] / tau), _softmax(t[keep] / tau)
    tckd, nckd = _kl(bt, bs) * tau**2, _kl(ht, hs) * tau**2
    return alpha * tckd + beta * nckd, tckd, nckd, _kl(pt, ps) * tau**2


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 6, 9, generator=g, dtype=torch.float64)
    teacher = 3 * torch.randn(2, 6, 9, generator=g, dtype=torch.float64)
    targets = teacher.argmax(-1)
    targets[0, 1] = 4  # a frame whose target is not the teacher's argmax
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    return student, teacher, targets, mask


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_dkd_and_kd_match_slow_reference(batch, tau):
    s, t, y, m = batch
    got = dkd_loss(s, t, y, m, alpha=1.0, beta=8.0, tau=tau)
    got_kd = kd_loss(s, t, m, tau=tau)["kd"]
    ref = np.array([
        slow_dkd(s[b, i].numpy(), t[b, i].numpy(), int(y[b, i]), 1.0, 8.0, tau)
        for b in range(2) for i in range(6) if m[b, i]
    ])  # fmt: skip
    assert float(got["dkd"]) == pytest.approx(ref[:, 0].mean(), rel=1e-9)
    assert float(got["tckd"]) == pytest.approx(ref[:, 1].mean(), rel=1e-9)
    assert float(got["nckd"]) == pytest.approx(ref[:, 2].mean(), rel=1e-9)
    assert float(got_kd) == pytest.approx(ref[:, 3].mean(), rel=1e-9)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_kd_equals_tckd_plus_weighted_nckd_per_frame(batch, tau):
    s, t, y, _ = batch
    one = torch.ones(1, 1, dtype=torch.bool)
    p_target = torch.softmax(t / tau, -1).gather(-1, y[..., None])[..., 0]
    for b in range(2):
        for i in range(6):
            args = (s[b : b + 1, i : i + 1], t[b : b + 1, i : i + 1])
            parts = dkd_loss(*args, y[b : b + 1, i : i + 1], one, alpha=1.0, beta=1.0, tau=tau)
            kd = kd_loss(*args, one, tau=tau)["kd"]
            expected = parts["tckd"] + (1 - p_target[b, i]) * parts["nckd"]
            assert float(kd) == pytest.approx(float(expected), rel=1e-9, abs=1e-12)


def test_zero_when_student_equals_teacher(batch):
    _, t, y, m = batch
    assert float(kd_loss(t, t, m, tau=2.0)["kd"]) == pytest.approx(0.0, abs=1e-12)
    for value in dkd_loss(t, t, y, m, alpha=1.0, beta=4.0, tau=2.0).values():
        assert float(value) == pytest.approx(0.0, abs=1e-12)


def test_padding_has_no_effect(batch):
    s, t, y, m = batch
    s2, t2, y2 = s.clone(), t.clone(), y.clone()
    s2[~m], t2[~m], y2[~m] = 1e6, float("nan"), 7  # garbage on padded frames
    for fn in (
        lambda a, b, c: ce_loss(a, c, m),
        lambda a, b, c: kd_loss(a, b, m, tau=2.0),
        lambda a, b, c: dkd_loss(a, b, c, m, alpha=1.0, beta=4.0, tau=2.0),
    ):
        clean, dirty = fn(s, t, y), fn(s2, t2, y2)
        for key in clean:
            assert float(dirty[key]) == pytest.approx(float(clean[key]), rel=1e-12), key


def test_ce_matches_torch_on_valid_frames(batch):
    s, _, y, m = batch
    expected = F.cross_entropy(s[m], y[m])
    assert float(ce_loss(s, y, m)["ce"]) == pytest.approx(float(expected), rel=1e-12)


def test_tau_squared_factor_is_applied(batch):
    """At a large tau, KL shrinks like 1/tau^2; times tau^2 it approaches a constant."""
    s, t, _, m = batch
    a = float(kd_loss(s, t, m, tau=50.0)["kd"])
    b = float(kd_loss(s, t, m, tau=100.0)["kd"])
    assert a == pytest.approx(b, rel=0.02)
    assert not math.isclose(a, 0.0)


def test_registered_wrappers_return_their_named_term(batch):
    from pipeline.training.batches import Batch

    s, t, y, m = batch
    feats = {"layer_1": torch.randn(*s.shape[:2], 6)}
    data = Batch(ids=[], wav=torch.zeros(0), lengths=torch.zeros(0), teacher_logits=t,
                 targets=y, frame_mask=m, features=feats)  # fmt: skip
    mask = torch.rand(*s.shape[:2], generator=torch.Generator().manual_seed(0)) < 0.5
    outputs = {"logits": s, "features": {"layer_1": feats["layer_1"] + 0.1}, "mask": mask}
    for name in LOSSES:
        cfg_type = LOSSES[name].config_type
        fields = {"weight": 1.0, "tau": 2.0, "alpha": 1.0, "beta": 4.0, "cos_weight": 1.0,
                  "unmasked_weight": 0.5}  # fmt: skip
        cfg = cfg_type(**{k: v for k, v in fields.items() if k in cfg_type.__dataclass_fields__})
        terms = LOSSES[name](cfg)(outputs, data)
        assert name in terms and terms[name].ndim == 0
    with pytest.raises(KeyError, match="unknown loss 'nope'; registered: ce, dkd, feature, kd"):
        LOSSES["nope"]


def test_masked_prediction_matches_a_slow_reference_and_ignores_padding(batch):
    from pipeline.losses.masked import masked_prediction_loss

    s, _, y, m = batch
    mask = torch.rand(*s.shape[:2], generator=torch.Generator().manual_seed(1)) < 0.4
    got = masked_prediction_loss(s, y, mask, m, unmasked_weight=0.5)
    terms = {True: [], False: []}
    hits = []
    for b in range(m.shape[0]):
        for f in range(m.shape[1]):
            if m[b, f]:
                ce = -torch.log_softmax(s[b, f], -1)[y[b, f]]
                terms[bool(mask[b, f])].append(float(ce))
                if mask[b, f]:
                    hits.append(float(s[b, f].argmax() == y[b, f]))
    expected = sum(terms[True]) / len(terms[True]) + 0.5 * sum(terms[False]) / len(terms[False])
    assert float(got["masked"]) == pytest.approx(expected, rel=1e-5)
    assert float(got["accuracy"]) == pytest.approx(sum(hits) / len(hits))
    garbage = s.clone()
    garbage[~m] = 1e4  # anything on padding changes nothing
    again = masked_prediction_loss(garbage, y, mask, m, unmasked_weight=0.5)
    assert float(again["masked"]) == pytest.approx(float(got["masked"]), rel=1e-6)


def _feature_reference(pred, target, mask, cos_weight):
    """Slow per-frame loops: DistilHuBERT's L1 + (-log sigmoid(cos)) on valid frames."""
    total = 0.0
    for name in pred:
        l1, cos_term, frames = 0.0, 0.0, 0
        for b in range(mask.shape[0]):
            for f in range(mask.shape[1]):
                if not mask[b, f]:
                    continue
                p, q = pred[name][b, f].double(), target[name][b, f].double()
                l1 += float((p - q).abs().mean())
                cos = float(p @ q / (p.norm() * q.norm()))
                cos_term += math.log1p(math.exp(-cos))
                frames += 1
        total += (l1 + cos_weight * cos_term) / frames
    return total


def test_feature_loss_matches_a_slow_reference_and_ignores_padding():
    from pipeline.losses.feature import feature_loss

    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[True] * 5 + [False] * 2, [True] * 7])
    pred = {k: torch.randn(2, 7, 4, generator=g) for k in ("layer_1", "layer_2")}
    target = {k: torch.randn(2, 7, 4, generator=g) for k in ("layer_1", "layer_2")}
    got = feature_loss(pred, target, mask, cos_weight=0.5)
    assert float(got["feature"]) == pytest.approx(_feature_reference(pred, target, mask, 0.5))
    pred["layer_1"][0, 5:] = float("nan")  # padding cannot leak
    assert torch.isfinite(feature_loss(pred, target, mask, cos_weight=0.5)["feature"])
    with pytest.raises(KeyError, match="add them to cache_teacher.features"):
        feature_loss({"layer_9": pred["layer_2"]}, target, mask, cos_weight=1.0)
