"""Students outside the project: the transformers directory loaded with transformers alone, the
s3prl upstream, ONNX (fp32 equal to PyTorch; int8 agreement and batch independence), the export
CLI and its refusal to keep a form that differs, and chunked streaming."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_MODEL
from torch.nn.utils.rnn import pad_sequence

from pipeline.corpus.manifest import audio_batches, read_manifest
from pipeline.export.config import ExportConfig
from pipeline.export.inference import Inference
from pipeline.export.onnx import export_onnx, onnx_runner, quantize_onnx
from pipeline.export.streaming import StreamingStudent
from pipeline.losses.ce import CEConfig
from pipeline.nn.distilhubert import DistilHubertConfig
from pipeline.nn.frames import HUBERT_FRAMES
from pipeline.nn.lstm import LSTMStudentConfig
from pipeline.students import STUDENTS
from pipeline.students.base import StudentConfig
from pipeline.students.checkpoint import load_student, save_student
from stages import export

TEACHER_CONV = {  # a small group-norm stack with HuBERT's kernels and strides (HuBERT Base's norm)
    "conv_dim": [8] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "norm": "group", "conv_bias": False,
}  # fmt: skip


def _lstm(tmp_path, name="s", **model):
    """A saved tiny LSTM student (random weights) and its path."""
    torch.manual_seed(0)
    cfg = LSTMStudentConfig(**{**TINY_MODEL, "lstm_layers": 2, **model})
    frontend = TEACHER_CONV if cfg.frontend == "cached" else None
    student = STUDENTS["lstm"](cfg, num_classes=12, frames=HUBERT_FRAMES, frontend=frontend)
    spec = StudentConfig(arch="lstm", model=cfg, losses={"ce": CEConfig(weight=1.0)})
    save_student(tmp_path / f"{name}.pt", {0: student}, spec, {})
    return student.eval(), tmp_path / f"{name}.pt"


def _distil(tmp_path):
    torch.manual_seed(0)
    cfg = DistilHubertConfig(
        conv_dim=8, frontend_init="random", frontend="conv", hidden=32, layers=2, heads=4,
        ffn=48, dropout=0.1, targets=["layer_1"],
    )  # fmt: skip
    student = STUDENTS["distilhubert"](cfg, num_classes=12, frames=HUBERT_FRAMES,
                                       feature_dims={"layer_1": 24})  # fmt: skip
    return student.eval()


def _noise(seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    wavs = [0.1 * torch.randn(int(16_000 * s), generator=g) for s in seconds]
    return pad_sequence(wavs, batch_first=True), torch.tensor([len(w) for w in wavs])


def _valid_max_diff(want, got, frame_lengths):
    valid = torch.arange(want.shape[1])[None] < frame_lengths[:, None]
    return float((want - got).abs()[valid].max())


# What runs in a fresh interpreter that may not import this project (an installed project
# would import anywhere: any attempt to is an error here).
FRESH = """
import importlib.abc, json, sys
import numpy as np, torch


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pipeline", "stages", "storage", "cli"):
            raise ImportError(f"{name}: an exported student must load without hubert-kd")


sys.meta_path.insert(0, Refuse())
data = np.load(sys.argv[2])
wavs = [torch.from_numpy(data[f"wav{i}"]) for i in range(int(data["count"]))]
"""

HF = (
    FRESH
    + """
from transformers import AutoFeatureExtractor, AutoModel

model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
extractor = AutoFeatureExtractor.from_pretrained(sys.argv[1])
inputs = extractor([w.numpy() for w in wavs], sampling_rate=16000, padding=True,
                   return_tensors="pt")
with torch.no_grad():
    out = model(**inputs, output_hidden_states=True)
frames = model._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1))
layers = {f"layer{i}": h.numpy() for i, h in enumerate(out.hidden_states)}
np.savez(sys.argv[3], frames=frames.numpy(), last=out.last_hidden_state.numpy(),
         logits=out.logits.numpy(), **layers)
"""
)

S3PRL = (
    FRESH
    + """
sys.path.insert(0, sys.argv[4])  # the folder the export copies into s3prl/upstream/
from hubert_kd.hubconf import hubert_kd_local

upstream = hubert_kd_local(sys.argv[1])
assert upstream.get_downsample_rates("hidden_states") == 320
with torch.no_grad():
    hidden = upstream(wavs)["hidden_states"]
np.savez(sys.argv[3], **{f"layer{i}": h.numpy() for i, h in enumerate(hidden)})
"""
)


def _wave(samples):
    return 0.1 * torch.randn(samples, generator=torch.Generator().manual_seed(samples))


def _fresh(script, tmp_path, folder, wavs, *extra):
    """Run ``script`` in a new interpreter on ``wavs``; what it saved."""
    np.savez(
        tmp_path / "in.npz", count=len(wavs), **{f"wav{i}": w.numpy() for i, w in enumerate(wavs)}
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(tmp_path / "in.npz"),
         str(tmp_path / "out.npz"), *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(tmp_path / "out.npz")


@pytest.mark.parametrize("frontend", ["fbank", "cached"])
def test_an_exported_student_loads_with_transformers_alone(tmp_path, frontend):
    """AutoModel with its own code (never this project's), input_values and attention_mask as
    Wav2Vec2FeatureExtractor prepares them: the checkpoint's logits, layers and frame counts."""
    student, ckpt = _lstm(tmp_path, frontend=frontend)
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "export", "s", "--checkpoint", str(ckpt), "--format",
         "hf", "--out", str(tmp_path / "out"), "--params", str(tmp_path / "none.yaml")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "out" / "hf"
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_hubert_kd.HubertKDModel"
    assert (folder / "modeling_hubert_kd.py").is_file() and (folder / "lstm.py").is_file()
    wavs = [
        0.1 * torch.randn(n, generator=torch.Generator().manual_seed(n)) for n in (20_800, 7_200)
    ]
    got = _fresh(HF, tmp_path, folder, wavs)
    wav = pad_sequence(wavs, batch_first=True)
    lengths = torch.tensor([len(w) for w in wavs])
    with torch.no_grad():
        logits, frames = student(wav, lengths)
        layers, _ = student.extract_features(wav, lengths)
    assert got["frames"].tolist() == frames.tolist()
    valid = (torch.arange(logits.shape[1])[None] < frames[:, None]).numpy()
    np.testing.assert_allclose(got["logits"][valid], logits.numpy()[valid], rtol=1e-5, atol=1e-5)
    for i, layer in enumerate(layers):
        np.testing.assert_allclose(got[f"layer{i}"][valid], layer.numpy()[valid], atol=1e-5)
    np.testing.assert_array_equal(got["last"], got[f"layer{len(layers) - 1}"])


def test_the_s3prl_upstream_gives_the_students_layers_at_a_320_sample_rate(tmp_path):
    """The export's upstream folder, through its own entry point (quick, without s3prl; the
    real s3prl runs it in tests/export/test_s3prl.py): a list of waveforms in, the LSTM layers out,
    zero beyond each utterance's frames."""
    student, ckpt = _lstm(tmp_path)
    export.run(ExportConfig(formats=["hf"]), ckpt, tmp_path / "out", None)
    wavs = [
        0.1 * torch.randn(n, generator=torch.Generator().manual_seed(n))
        for n in (16_000, 9_999, 4_321)
    ]
    hf = tmp_path / "out" / "hf"
    got = _fresh(S3PRL, tmp_path, hf, wavs, str(hf / "s3prl"))
    assert len(got.files) == 2  # the LSTM layers (the projection is narrower)
    for i, wav in enumerate(wavs):
        with torch.no_grad():
            alone, frames = student.extract_features(wav[None], torch.tensor([len(wav)]))
        n = int(frames)
        for j, want in enumerate(alone[1:]):
            assert got[f"layer{j}"].shape == (3, HUBERT_FRAMES.num_frames(16_000), 32)
            np.testing.assert_allclose(got[f"layer{j}"][i, :n], want[0].numpy(), atol=1e-5)
            assert not got[f"layer{j}"][i, n:].any()


@pytest.mark.parametrize("kind", ["lstm-conv", "lstm-fbank", "lstm-cached", "lstm-causal",
                                  "distilhubert"])  # fmt: skip
def test_onnx_equals_pytorch_on_raw_audio_of_several_lengths(tmp_path, kind):
    if kind == "distilhubert":
        student = _distil(tmp_path)
    else:
        frontend = {"lstm-conv": "conv", "lstm-fbank": "fbank"}.get(kind, "cached")
        student, _ = _lstm(tmp_path, frontend=frontend, bidirectional=kind != "lstm-causal")
    reference = Inference(student).eval()
    onnx = onnx_runner(export_onnx(student, tmp_path / "m.onnx"))
    for seconds in [(0.03,), (2.71,), (1.0, 0.4), (0.9, 3.3, 0.026, 1.7)]:  # 1 to 4 utterances
        wav, lengths = _noise(seconds, seed=len(seconds))
        with torch.no_grad():
            want, frames = reference(wav, lengths)
            got, got_frames = onnx(wav, lengths)
            assert torch.equal(got_frames.to(frames.dtype), frames)
            assert _valid_max_diff(want, got, frames) <= 1e-4, (kind, seconds)


def test_the_export_stage_writes_checked_forms_and_measures_int8_agreement(tmp_path, tiny_corpus):
    student, ckpt = _lstm(tmp_path, frontend="cached")
    cfg = ExportConfig(formats=["hf", "onnx"], quantize="int8")
    record = export.run(cfg, ckpt, tmp_path / "out", tiny_corpus)
    out = tmp_path / "out"
    assert json.loads((out / "export.json").read_text()) == json.loads(json.dumps(record))
    assert set(record["forms"]) == {"hf", "onnx", "onnx-int8"}
    for form in ("hf", "onnx"):
        assert record["forms"][form]["max_abs_diff"] <= 1e-4
    # the reported agreement is the int8 file's argmax against fp32 on the test split's frames;
    # recomputed here one utterance at a time (the stage batches 60 s): the same figure
    utts = read_manifest(tiny_corpus, "test")
    int8 = onnx_runner(out / "model.int8.onnx")
    hits = frames = 0
    for _, wav, lengths in audio_batches(utts, tiny_corpus, 0.0):
        with torch.no_grad():
            want, n = student(wav, lengths)
        got, _ = int8(wav, lengths)
        valid = torch.arange(want.shape[1])[None] < n[:, None]
        hits += int((want.argmax(-1) == got.argmax(-1))[valid].sum())
        frames += int(valid.sum())
    measured = record["int8_agreement"]
    assert measured["split"] == "test" and measured["utterances"] == len(utts)
    assert measured["onnx-int8"]["frames"] == frames
    assert measured["onnx-int8"]["top1_agreement"] == pytest.approx(hits / frames, abs=1e-6)
    assert record["streaming"]["streams"] is False  # bidirectional


@pytest.mark.parametrize("frontend", ["cached", "fbank"])
def test_int8_outputs_of_an_utterance_do_not_depend_on_its_batch(tmp_path, tiny_corpus, frontend):
    """Each test utterance alone, and beside a longer one, a louder one and extra padding:
    the int8 form gives it exactly the same outputs (max |diff| 0, no argmax flip)."""
    student, _ = _lstm(tmp_path, frontend=frontend)
    export_onnx(student, tmp_path / "m.onnx")
    int8 = onnx_runner(quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", student.frames))
    utts = read_manifest(tiny_corpus, "test")
    wavs = [wav[0, :n] for _, wav, (n,) in audio_batches(utts, tiny_corpus, 0.0)]
    longest = max(wavs, key=len)
    for wav in wavs:
        alone, (frames,) = int8(wav[None], torch.tensor([len(wav)]))
        company = [wav, torch.cat([longest, longest]), 4 * longest[: len(wav)]]
        batch = pad_sequence(company, batch_first=True)
        batch = torch.cat([batch, torch.zeros(len(company), 5_000)], dim=1)  # extra padding
        beside, got_frames = int8(batch, torch.tensor([len(w) for w in company]))
        assert int(got_frames[0]) == int(frames)
        assert float((beside[0, :frames] - alone[0, :frames]).abs().max()) == 0.0
        assert not beside[0, frames:].any()  # zero past its frames


def test_a_form_that_differs_from_pytorch_is_an_error_and_nothing_is_written(tmp_path):
    _, ckpt = _lstm(tmp_path)
    out = tmp_path / "out"
    export.run(ExportConfig(formats=["onnx"]), ckpt, out, None)
    before = (out / "export.json").read_text()
    with pytest.raises(ValueError, match="onnx export differs from the student"):
        export.run(ExportConfig(formats=["onnx", "hf"], tolerance=1e-12), ckpt, out, None)
    assert (out / "export.json").read_text() == before  # the earlier, checked export stays
    assert not (out / "hf").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_export_settings_are_checked_naming_the_key():
    from pipeline.core.config import from_dict
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="export.formats"):
        from_dict(ExportConfig, {"formats": ["tflite"]}, "export")
    with pytest.raises(ConfigError, match="export.quantize"):
        from_dict(ExportConfig, {"formats": ["hf"], "quantize": "int8"}, "export")


def test_streaming_in_chunks_of_any_size_equals_the_whole_utterance(tmp_path):
    student, ckpt = _lstm(tmp_path, frontend="conv", bidirectional=False)
    wav, lengths = _noise((2.0, 2.0), seed=5)
    with torch.no_grad():
        whole, frames = student(wav, lengths)
    random_sizes = np.random.default_rng(0).integers(1, 3_000, size=200).tolist()
    for sizes in ([1, 7, 319, 321, 400, 401], [160], random_sizes, [32_000]):  # none align
        stream = StreamingStudent(load_student(ckpt)[0])
        outputs, start, i = [], 0, 0
        while start < wav.shape[1]:
            size = sizes[i % len(sizes)]
            outputs.append(stream.push(wav[:, start : start + size]))  # two streams in step
            start, i = start + size, i + 1
        streamed = torch.cat(outputs, dim=1)
        assert streamed.shape == whole.shape, sizes[:6]
        torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)
    assert stream.latency_ms == 25.0 and stream.hop_ms == 20.0
    one = StreamingStudent(student)
    got = torch.cat([one.push(wav[0, s : s + 500]) for s in range(0, 32_000, 500)])
    torch.testing.assert_close(got, whole[0], rtol=1e-5, atol=1e-5)  # a 1-D stream


@pytest.mark.parametrize(
    "model, reason",
    [
        ({"frontend": "conv"}, "bidirectional"),
        ({"frontend": "fbank", "bidirectional": False}, "CMVN"),
        ({"frontend": "cached", "bidirectional": False}, "group norm"),
    ],
)
def test_students_that_cannot_stream_are_refused_saying_why(tmp_path, model, reason):
    student, _ = _lstm(tmp_path, **model)
    with pytest.raises(ValueError, match=reason):
        StreamingStudent(student)
    with pytest.raises(ValueError, match="not an LSTM student"):
        StreamingStudent(_distil(tmp_path))
