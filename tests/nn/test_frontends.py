"""Teacher features in the cache (conv stack output, hidden layers; fp16 or int8), students on a
cached frozen front end (export equivalence), the light fbank front end (frame alignment), and
the DistilHuBERT-style feature-distillation student."""

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, tiny_params

from pipeline.core.config import ConfigError, section
from pipeline.corpus.manifest import read_manifest
from pipeline.nn.frames import HUBERT_FRAMES
from pipeline.nn.frontends import FbankFrontend
from pipeline.students import parse_student
from pipeline.students.checkpoint import CHECKPOINT, build_student, load_student
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.training.cache_batches import CacheBatches
from pipeline.training.config import TrainConfig
from stages import cache_teacher, train_student
from storage import open_cache, read_frontend
from storage.features import decode_feature, encode_feature

FEATURES = ["conv", "layer_1", "layer_2"]


def _cache(corpus, out, encoding):
    params = tiny_params()
    params["cache_teacher"].update(features=FEATURES, feature_encoding=encoding)
    cfg = section(params, "cache_teacher", CacheTeacherConfig)
    cache_teacher.run(cfg, corpus, out)
    return out


@pytest.fixture(scope="module")
def fp16_cache(tiny_corpus, tmp_path_factory):
    return _cache(tiny_corpus, tmp_path_factory.mktemp("feat") / "cache", "float16")


def test_int8_round_trip_error_is_within_half_a_step():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, 64)) * rng.uniform(0.01, 50, size=(200, 1))).astype(np.float32)
    x[3] = 0.0  # an all-zero frame
    decoded = decode_feature("conv", encode_feature("conv", x, "int8"), "int8").numpy()
    step = np.abs(x).max(axis=1, keepdims=True) / 127
    assert (np.abs(decoded - x) <= step / 2 + 1e-6).all()
    assert (decoded[3] == 0).all()
    fp16 = decode_feature("conv", encode_feature("conv", x, "float16"), "float16").numpy()
    assert np.abs(fp16 - x).max() <= np.abs(x).max() * 2**-10
    with pytest.raises(ValueError, match="NaN or Inf"):
        encode_feature("conv", np.full((2, 3), np.nan, np.float32), "int8")


def test_cached_features_are_the_teachers_layers(fp16_cache, tiny_corpus):
    from pipeline.core.config import from_dict
    from pipeline.teacher.config import TeacherConfig
    from pipeline.teacher.sources import build_teacher

    reader = open_cache(fp16_cache)
    header = reader.header
    assert header.features["conv"] == {"dim": 16, "encoding": "float16"}
    assert header.features["layer_2"]["dim"] == 32
    # 2 bytes x (16 + 32 + 32) for features on top of int16 targets + fp16 logits
    assert header.bytes_per_frame() == 2 + 2 * 20 + 2 * (16 + 32 + 32)
    teacher = build_teacher(
        from_dict(TeacherConfig, tiny_params()["cache_teacher"]["teacher"], "teacher")
    )
    utt = read_manifest(tiny_corpus)[0]
    from pipeline.audio.files import read_audio
    from pipeline.corpus.manifest import audio_path

    layers, _ = teacher.hidden_states(*_one(read_audio(audio_path(utt, tiny_corpus))))
    cached = header.decode_features(reader.read(utt.id))
    for index, name in ((0, "conv"), (2, "layer_1"), (3, "layer_2")):
        torch.testing.assert_close(cached[name], layers[index][0], rtol=2e-3, atol=2e-3)


def _one(wav):
    return wav[None], torch.tensor([len(wav)])


def test_unknown_feature_is_a_config_error(tiny_corpus, tmp_path):
    params = tiny_params()
    params["cache_teacher"]["features"] = ["layer_9"]
    cfg = section(params, "cache_teacher", CacheTeacherConfig)
    with pytest.raises(ConfigError, match=r"\['layer_9'\] not features of this teacher"):
        cache_teacher.run(cfg, tiny_corpus, tmp_path / "cache")


def _train(name, raw, corpus, cache, tmp_path):
    params = tiny_params()
    student = parse_student(raw, name)
    out = tmp_path / name
    train_student.run({name: student}, section(params, "train", TrainConfig), corpus, cache,
                      {name: out}, tmp_path / f"{name}.state")  # fmt: skip
    return load_student(out / CHECKPOINT)[0]


def _batch(corpus, cache):
    utts = read_manifest(corpus, split="train")
    data = CacheBatches(cache, utts, corpus, batch_seconds=20.0, seed=0, shuffle=False, pool=0)
    return next(iter(data))


def test_cached_frontend_student_exports_to_raw_audio(fp16_cache, tiny_corpus, tmp_path):
    raw = {"arch": "lstm", "model": {**TINY_MODEL, "frontend": "cached"},
           "losses": {"ce": {"weight": 1.0}}}  # fmt: skip
    model = _train("cached", raw, tiny_corpus, fp16_cache, tmp_path)
    spec, weights = read_frontend(fp16_cache)
    for key, value in weights.items():  # the teacher's conv stack, untouched by training
        torch.testing.assert_close(model.frontend.net.state_dict()[key], value)
    batch = _batch(tiny_corpus, fp16_cache)
    with torch.no_grad():
        trained_on = model.train_outputs(batch)["logits"]
        exported, _ = model(batch.wav, batch.lengths)
    m = batch.frame_mask
    torch.testing.assert_close(exported[m], trained_on[m], rtol=2e-2, atol=2e-2)


def test_cached_frontend_needs_the_conv_feature(fp16_cache, tiny_corpus):
    raw = {"arch": "lstm", "model": {**TINY_MODEL, "frontend": "cached"},
           "losses": {"ce": {"weight": 1.0}}}  # fmt: skip
    student = parse_student(raw, "cached")
    with pytest.raises(ValueError, match="needs the teacher's conv stack"):
        build_student(student, 20, HUBERT_FRAMES, None)
    model = build_student(student, 20, HUBERT_FRAMES, read_frontend(fp16_cache))
    batch = _batch(tiny_corpus, fp16_cache)
    batch.features = {}  # a cache without the conv feature
    with pytest.raises(ValueError, match="add conv to cache_teacher.features"):
        model.train_outputs(batch)


@pytest.mark.parametrize("samples", [400, 559, 560, 719, 720, 4_321, 16_000, 48_123])
def test_fbank_frontend_frames_align_with_the_teacher(samples):
    frontend = FbankFrontend(8, HUBERT_FRAMES)
    out = frontend(torch.randn(1, samples), torch.tensor([samples]))
    assert out.shape == (1, HUBERT_FRAMES.num_frames(samples), 8)


def test_fbank_student_trains_and_runs_padded_batches_like_single_ones(tiny_cache, tiny_corpus,
                                                                       tmp_path):  # fmt: skip
    raw = {"arch": "lstm", "model": {**TINY_MODEL, "frontend": "fbank"},
           "losses": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "tau": 2.0}}}  # fmt: skip
    model = _train("light", raw, tiny_corpus, tiny_cache, tmp_path)
    batch = _batch(tiny_corpus, tiny_cache)
    with torch.no_grad():
        logits, frame_lengths = model(batch.wav, batch.lengths)
        assert logits.shape[:2] == batch.frame_mask.shape
        n = int(batch.lengths[0])
        alone, _ = model(batch.wav[:1, :n], batch.lengths[:1])
    torch.testing.assert_close(alone[0], logits[0, : alone.shape[1]], rtol=1e-4, atol=1e-5)


def test_distilhubert_student_learns_teacher_layers(fp16_cache, tiny_corpus, tmp_path):
    raw = {"arch": "distilhubert",
           "model": {"conv_dim": 8, "frontend_init": "teacher", "frontend": "conv", "hidden": 32,
                     "layers": 2, "heads": 2, "ffn": 64, "dropout": 0.0,
                     "targets": ["layer_1", "layer_2"]},
           "losses": {"feature": {"weight": 1.0, "cos_weight": 1.0}}}  # fmt: skip
    student = parse_student(raw, "distil")
    header = open_cache(fp16_cache).header
    dims = {f: s["dim"] for f, s in header.features.items()}
    model = build_student(student, header.num_classes, HUBERT_FRAMES, None, dims)
    assert not model.predicts_logits
    batch = _batch(tiny_corpus, fp16_cache)
    from pipeline.losses import LOSSES

    loss = LOSSES["feature"](student.losses["feature"])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        value = loss(model.train_outputs(batch), batch)["feature"]
        first = first if first is not None else value.item()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert value.item() < 0.7 * first
    layers, _ = model.extract_features(batch.wav, batch.lengths)
    assert len(layers) == 3 and all(x.shape[-1] == 32 for x in layers)
    with pytest.raises(ValueError, match="not in the cache"):
        build_student(student, header.num_classes, HUBERT_FRAMES, None, {})


@pytest.mark.parametrize("shift_ms", [10.0, 20.0])
def test_batched_log_mel_is_kaldis_fbank(shift_ms):
    """One strided convolution and two matrix products give Kaldi's log-mel, for every
    utterance of a padded batch (the form that exports to ONNX)."""
    import torchaudio.compliance.kaldi as kaldi

    from pipeline.nn.fbank import LogMel

    wavs = [0.1 * torch.randn(n, generator=torch.Generator().manual_seed(n))
            for n in (16_000, 9_999, 400, 48_123)]  # fmt: skip
    batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    feats, frames = LogMel(80, shift_ms)(batch, torch.tensor([len(w) for w in wavs]))
    for i, wav in enumerate(wavs):
        reference = kaldi.fbank(wav[None] * 32768, sample_frequency=16_000, frame_length=25.0,
                                frame_shift=shift_ms, num_mel_bins=80, dither=0.0,
                                snip_edges=True)  # fmt: skip
        assert int(frames[i]) == len(reference)
        torch.testing.assert_close(feats[i, : frames[i]], reference, rtol=0, atol=1e-3)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_the_students_conv_stack_is_transformers_own(norm):
    """Students build HuBERT's conv stack without transformers: the same parameter names, the
    same initial weights for a seed, the same outputs for the same weights."""
    from transformers import HubertConfig
    from transformers.models.hubert.modeling_hubert import HubertFeatureEncoder

    from pipeline.nn.conv import build_frontend, frontend_spec

    config = HubertConfig(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2),
                          feat_extract_norm=norm, conv_bias=norm == "layer")  # fmt: skip
    torch.manual_seed(0)
    theirs = HubertFeatureEncoder(config)
    torch.manual_seed(0)
    ours = build_frontend(frontend_spec(theirs))
    a, b = theirs.state_dict(), ours.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for p in theirs.parameters():
        torch.nn.init.normal_(p)
    ours.load_state_dict(theirs.state_dict())
    wav = torch.randn(2, 4_000)
    with torch.no_grad():
        assert torch.equal(ours(wav), theirs(wav))
