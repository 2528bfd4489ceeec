"""Students: shapes, frame alignment with the cache, padding independence, checkpoints."""

import pytest
import torch
from conftest import TINY_MODEL

from pipeline.core.errors import CheckpointError
from pipeline.losses.ce import CEConfig
from pipeline.nn.frames import FrameSpec
from pipeline.nn.lstm import LSTMStudentConfig
from pipeline.students import STUDENTS
from pipeline.students.base import StudentConfig
from pipeline.students.checkpoint import load_student, load_students, save_student

HUBERT = FrameSpec((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))


def _student(**overrides):
    torch.manual_seed(0)
    cfg = LSTMStudentConfig(**{**TINY_MODEL, "lstm_layers": 2, **overrides})
    return STUDENTS["lstm"](cfg, num_classes=11, frames=HUBERT).eval(), cfg


def test_shapes_and_frames_follow_the_teacher_stack():
    model, cfg = _student()
    lengths = torch.tensor([32_000, 16_000, 4_000])
    wav = torch.randn(3, 32_000) * 0.1
    logits, frame_lengths = model(wav, lengths)
    assert logits.shape == (3, 99, 11)
    assert frame_lengths.tolist() == [HUBERT.num_frames(int(n)) for n in lengths] == [99, 49, 12]
    layers, _ = model.extract_features(wav, lengths)
    assert len(layers) == 1 + cfg.lstm_layers
    assert layers[0].shape == (3, 99, cfg.proj_dim) and layers[-1].shape == (
        3,
        99,
        2 * cfg.lstm_hidden,
    )


def test_padding_does_not_change_valid_frames():
    model, _ = _student()
    g = torch.Generator().manual_seed(3)
    a, b = 0.1 * torch.randn(20_000, generator=g), 0.1 * torch.randn(7_000, generator=g)
    batch = torch.stack([a, torch.cat([b, torch.full((13_000,), 0.9)])])  # garbage padding
    logits, frames = model(batch, torch.tensor([20_000, 7_000]))
    alone, _ = model(b[None], torch.tensor([7_000]))
    torch.testing.assert_close(logits[1, : frames[1]], alone[0], rtol=1e-5, atol=1e-5)


def test_checkpoint_round_trip_of_every_training_seed(tmp_path):
    """One checkpoint holds each training seed's weights; a seed is loaded by name, the first
    declared by default, and an unknown seed or an older one-model file is refused."""
    model, cfg = _student()
    torch.manual_seed(1)
    other, _ = _student()
    spec = StudentConfig(arch="lstm", model=cfg, losses={"ce": CEConfig(weight=1.0)})
    save_student(tmp_path / "m.pt", {7: model, 2: other}, spec, {"cache_fingerprint": "abc"})
    wav, n = torch.randn(1, 8_000), torch.tensor([8_000])
    loaded, ckpt = load_student(tmp_path / "m.pt")
    torch.testing.assert_close(loaded(wav, n)[0], model(wav, n)[0])
    torch.testing.assert_close(load_student(tmp_path / "m.pt", seed=2)[0](wav, n)[0],
                               other(wav, n)[0])  # fmt: skip
    assert ckpt["seeds"] == [7, 2]
    assert ckpt["cache_fingerprint"] == "abc" and ckpt["losses"] == {"ce": {"weight": 1.0}}
    models, _ = load_students(tmp_path / "m.pt")
    assert list(models) == [7, 2]
    with pytest.raises(CheckpointError, match=r"no training seed 3 \(it has \[7, 2\]\)"):
        load_student(tmp_path / "m.pt", seed=3)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["state_dict"] = payload.pop("state_dicts")[0]
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="an earlier version .* retrain it"):
        load_student(tmp_path / "old.pt")


def test_the_encoder_layer_is_torchs_transformer_layer_with_its_weights():
    from torch import nn

    from pipeline.nn.transformer import EncoderLayer

    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(32, 4, 48, 0.0, activation="gelu", batch_first=True).eval()
    mine = EncoderLayer(32, 4, 48, 0.0).eval()
    mine.load_state_dict(ref.state_dict())  # same names: DistilHuBERT-style checkpoints load
    x, lengths = torch.randn(3, 17, 32), torch.tensor([17, 9, 4])
    valid = torch.arange(17)[None] < lengths[:, None]
    for grad in (True, False):  # torch's layer takes a fused path without grad
        with torch.set_grad_enabled(grad):
            want = ref(x, src_key_padding_mask=~valid)
            torch.testing.assert_close(mine(x, valid)[valid], want[valid], rtol=1e-5, atol=1e-5)
