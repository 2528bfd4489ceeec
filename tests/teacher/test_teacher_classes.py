"""Teachers of every supported class (HuBERT, wav2vec 2.0, WavLM, data2vec-audio): tiny random
models built and saved by transformers itself, loaded as what they are and strictly, cached as
their own forward computes them, with students and the evaluation on top; anything else is
refused."""

import json

import pytest
import torch
from conftest import TINY_KMEANS, tiny_params, with_kmeans, write_params
from transformers import (
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertForCTC,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from pipeline.core.config import from_dict, section
from pipeline.core.errors import CacheFormatError, CheckpointError
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.sources import build_teacher, untrained_teacher

SIZE = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "conv_dim": (16,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
}  # fmt: skip
CLASSES = {  # each as its released Base/Large checkpoints are shaped
    "hubert": (HubertModel, lambda: HubertConfig(**SIZE)),  # group-norm conv stack, post-LN
    "wav2vec2": (Wav2Vec2Model, lambda: Wav2Vec2Config(  # Large: layer norms, pre-LN
        **SIZE, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)),
    "wavlm": (WavLMModel, lambda: WavLMConfig(**SIZE)),  # Base+: gated relative position bias
    "data2vec-audio": (Data2VecAudioModel, lambda: Data2VecAudioConfig(  # a positional conv stack
        **{**SIZE, "num_conv_pos_embeddings": 2, "conv_pos_kernel_size": 5})),
}  # fmt: skip


def _model(kind: str, position_bias: bool = True):
    """The tiny random ``kind`` model. At initialisation WavLM's relative position bias
    (N(0, 0.02) per bucket and head) and its attention's value and output projections are
    small against the residual path: the bias moves layer 1 by a fraction of a percent. Here
    they are scaled up (the bias x200, the projections x20), so that the bias moves layer 1 by
    about half its norm and dropping it shows; ``position_bias=False`` zeroes it, which is what
    a model without it computes."""
    cls, config = CLASSES[kind]
    torch.manual_seed(7)  # not the untrained teacher's seed
    model = cls(config()).eval()
    if kind == "wavlm":
        attention = model.encoder.layers[0].attention
        with torch.no_grad():
            attention.rel_attn_embed.weight.mul_(200.0 if position_bias else 0.0)
            attention.v_proj.weight.mul_(20.0)
            attention.out_proj.weight.mul_(20.0)
    return model


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory):
    """Each class saved with ``save_pretrained``: kind -> directory."""
    root = tmp_path_factory.mktemp("encoders")
    for kind in CLASSES:
        _model(kind).save_pretrained(root / kind)
    return {kind: root / kind for kind in CLASSES}


def _teacher_cfg(source: str, **overrides) -> TeacherConfig:
    raw = tiny_params()["cache_teacher"]["teacher"]
    raw.update({"source": source, "logits": "kmeans", "targets": "kmeans",
                "kmeans": dict(TINY_KMEANS), **overrides})  # fmt: skip
    return from_dict(TeacherConfig, raw, "teacher")


def _wavs(*lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=g) for n in lengths]


def _own_layers(model, wav: torch.Tensor) -> list[torch.Tensor]:
    """The class's own forward on ``wav`` alone, as the teacher names its layers: ``conv``,
    then ``hidden_states`` 0..N-1, and layer N its output (for a pre-LN encoder the
    ``hidden_states`` entry N lacks the final layer norm that the output has)."""
    with torch.no_grad():
        out = model(wav[None], output_hidden_states=True)
        conv = model.feature_extractor(wav[None]).transpose(1, 2)
    return [conv[0], *(h[0] for h in out.hidden_states[:-1]), out.last_hidden_state[0]]


@pytest.mark.parametrize("kind", CLASSES)
def test_each_class_is_loaded_as_itself_and_gives_its_own_layers(encoder_dirs, kind):
    """The batched teacher's every layer is the class's own forward on each utterance alone,
    and the random_teacher baseline is the same class, untrained."""
    teacher = build_teacher(_teacher_cfg(f"hf:{encoder_dirs[kind]}"))
    reference = _model(kind)
    assert type(teacher.encoder) is type(reference) and teacher.model_type == kind
    state = reference.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in teacher.encoder.state_dict().items())
    assert teacher.encoder.state_dict().keys() == state.keys()
    wavs = _wavs(16_000, 9_999, 3_000, 400)
    lengths = torch.tensor([len(w) for w in wavs])
    layers, frame_lengths = teacher.hidden_states(
        torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths
    )
    assert len(layers) == len(teacher.feature_names()) == SIZE["num_hidden_layers"] + 2
    for i, wav in enumerate(wavs):
        n = int(frame_lengths[i])
        for got, own in zip(layers, _own_layers(reference, wav), strict=True):
            torch.testing.assert_close(got[i, :n], own, rtol=1e-4, atol=1e-5)
    untrained = untrained_teacher(_teacher_cfg(f"hf:{encoder_dirs[kind]}"))
    assert type(untrained.encoder) is type(reference) and untrained.model_type == kind
    assert untrained.encoder.config.to_dict() == teacher.encoder.config.to_dict()
    w = "encoder.layers.0.feed_forward.intermediate_dense.weight"
    assert not torch.equal(untrained.encoder.state_dict()[w], state[w])


def test_wavlm_position_bias_moves_its_layers(encoder_dirs):
    """What the WavLM tests rest on: without its relative position bias (as a HuBERT loading
    WavLM's weights computes), layer 1 differs materially from WavLM's own."""
    wav = _wavs(16_000)[0]
    teacher = build_teacher(_teacher_cfg(f"hf:{encoder_dirs['wavlm']}"))
    layers, _ = teacher.hidden_states(wav[None], torch.tensor([len(wav)]))
    without = _own_layers(_model("wavlm", position_bias=False), wav)[2]
    change = (layers[2][0] - without).norm() / without.norm()
    assert change > 0.3, f"the position bias moves layer 1 by {change:.1%} only"


def _edit_config(directory, **changes) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_weights_that_do_not_fit_their_class_are_an_error_naming_them(encoder_dirs, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    def copy(kind, name):
        shutil.copytree(encoder_dirs[kind], tmp_path / name)
        return tmp_path / name

    # WavLM's weights under a config that says HuBERT: the position bias would be dropped
    relabelled = copy("wavlm", "relabelled")
    _edit_config(relabelled, model_type="hubert", architectures=["HubertModel"])
    with pytest.raises(
        CheckpointError, match=r"do not fit HubertModel: unexpected \[.*gru_rel_pos"
    ):
        build_teacher(_teacher_cfg(f"hf:{relabelled}"))
    # a weight missing from the file
    missing = copy("data2vec-audio", "missing")
    weights = load_file(missing / "model.safetensors")
    del weights["encoder.layers.1.final_layer_norm.weight"]
    save_file(weights, missing / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing \['encoder.layers.1.final_layer_norm.w"):
        build_teacher(_teacher_cfg(f"hf:{missing}"))
    # weights of another shape than the config's
    misshaped = copy("wav2vec2", "misshaped")
    _edit_config(misshaped, intermediate_size=48)
    with pytest.raises(CheckpointError, match=r"mis-shaped \['encoder.layers.0.feed_forward"):
        build_teacher(_teacher_cfg(f"hf:{misshaped}"))
    # a model type that transformers does not know either: the same refusal
    _edit_config(copy("hubert", "unknown"), model_type="not-a-model")
    with pytest.raises(CheckpointError, match="model type 'not-a-model' is not a supported"):
        build_teacher(_teacher_cfg(f"hf:{tmp_path / 'unknown'}"))
    # an adapter after the Transformer changes the frame rate: refused before loading
    _edit_config(copy("wav2vec2", "adapter"), add_adapter=True)
    with pytest.raises(CheckpointError, match="add_adapter"):
        build_teacher(_teacher_cfg(f"hf:{tmp_path / 'adapter'}"))


def test_a_fine_tuned_checkpoint_gives_its_encoder_strictly(tmp_path, caplog):
    """A ``*ForCTC`` directory holds the encoder under a prefix, beside its task head: the
    encoder loads strictly (all of it, nothing else in it), the head is not the teacher's."""
    torch.manual_seed(0)
    ctc = HubertForCTC(HubertConfig(**SIZE, vocab_size=12)).eval()
    ctc.save_pretrained(tmp_path / "ctc")
    with caplog.at_level("INFO", logger="pipeline.teacher.encoders"):
        teacher = build_teacher(_teacher_cfg(f"hf:{tmp_path / 'ctc'}"))
    assert "not loaded: ['lm_head.bias', 'lm_head.weight']" in caplog.text
    assert type(teacher.encoder) is HubertModel
    expected = ctc.hubert.state_dict()
    got = teacher.encoder.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def test_a_model_that_is_no_speech_encoder_is_refused_in_one_line(
    tmp_path, tiny_corpus, monkeypatch
):
    from transformers import WhisperConfig, WhisperModel
    from typer.testing import CliRunner

    from cli.main import app

    WhisperModel(
        WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
                      vocab_size=64, max_source_positions=16, max_target_positions=16,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    ).save_pretrained(tmp_path / "whisper")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", with_kmeans(tiny_params(), logits="kmeans"))
    result = CliRunner().invoke(app, [
        "cache-teacher", "--manifest", str(tiny_corpus), "--out", "cache",
        "--teacher", f"hf:{tmp_path / 'whisper'}",
    ])  # fmt: skip
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert "model type 'whisper'" in line
    assert "supported: hubert, wav2vec2, wavlm, data2vec-audio" in line
    assert not (tmp_path / "cache").exists()


def test_the_demo_teacher_loads_as_hubert_did():
    """The shipped teacher (HuBERT) through the class-aware loader is exactly the
    ``HubertModel.from_pretrained`` it was before: same weights, same outputs."""
    from conftest import ROOT

    from pipeline.teacher.model import Teacher
    from pipeline.teacher.sources import load_head

    directory = ROOT / "assets" / "demo-teacher"
    cfg = _teacher_cfg(f"hf:{directory}", logits="head", targets="argmax")
    teacher = build_teacher(cfg)
    plain = HubertModel.from_pretrained(directory).float()  # the loader before this change
    before = Teacher(plain, load_head(directory), normalize=teacher.normalize,
                     description=teacher.description, cfg=cfg)  # fmt: skip
    assert teacher.model_type == "hubert"
    a, b = teacher.state_dict(), before.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    wavs = _wavs(16_000, 7_001)
    for (la, ta, fa), (lb, tb, fb) in zip(
        teacher.outputs(wavs, ("conv", "layer_2")), before.outputs(wavs, ("conv", "layer_2")),
        strict=True,
    ):  # fmt: skip
        assert torch.equal(la, lb) and torch.equal(ta, tb)
        assert all(torch.equal(fa[k], fb[k]) for k in fa)


def test_a_cache_without_a_teacher_class_is_a_hubert_cache(tiny_cache, tmp_path):
    """Caches written before the header named the teacher's class were all HuBERT's."""
    from storage.header import HEADER, json_digest, read_header

    raw = json.loads((tiny_cache / HEADER).read_text())
    assert raw["teacher_class"] == "hubert"
    del raw["teacher_class"]
    raw["digest"] = json_digest(raw)
    (tmp_path / HEADER).write_text(json.dumps(raw))
    assert read_header(tmp_path).teacher_class == "hubert"


@pytest.mark.slow
@pytest.mark.parametrize("kind", CLASSES)
def test_each_class_through_the_pipeline(encoder_dirs, kind, tiny_corpus, tiny_cache, tmp_path):
    """cache-teacher with k-means logits and targets on layer 1 (the conv features and both
    layers cached, int8), a student on the cached conv stack, the teacher's evaluation; the
    cached layers are the class's own, within the int8 encoding's bound."""
    from pipeline.corpus.manifest import read_manifest, read_utterance
    from pipeline.evaluation.scoring import EvaluateConfig
    from pipeline.students import parse_students
    from pipeline.students.checkpoint import CHECKPOINT, load_student
    from pipeline.teacher.caching import CacheTeacherConfig
    from pipeline.training.config import TrainConfig
    from stages import cache_teacher, evaluate_student, evaluate_teacher, train_student
    from storage import open_cache

    params = with_kmeans(
        tiny_params(), source=f"hf:{encoder_dirs[kind]}", logits="kmeans", targets="kmeans"
    )
    params["cache_teacher"].update(features=["conv", "layer_1", "layer_2"], feature_encoding="int8")
    header = cache_teacher.run(
        section(params, "cache_teacher", CacheTeacherConfig), tiny_corpus, tmp_path / "cache"
    )
    assert header.teacher_class == kind and header.target_source == "kmeans(layer=1)"
    assert header.num_classes == TINY_KMEANS["num_clusters"]

    reader = open_cache(tmp_path / "cache")
    own, without_bias = _model(kind), _model(kind, position_bias=False)
    for utt in read_manifest(tiny_corpus)[:4]:
        wav = read_utterance(utt, tiny_corpus)
        fields = reader.read(utt.id)
        cached = header.decode_features(fields)
        expected = _own_layers(own, wav)
        for name, layer in (("conv", 0), ("layer_1", 2), ("layer_2", 3)):
            bound = torch.as_tensor(fields[f"feat_{name}_scale"])[:, None] * 0.5 + 1e-5
            error = (cached[name] - expected[layer]).abs()
            assert (error <= bound).all(), f"{kind} {name}: {error.max()} over the int8 bound"
            if kind == "wavlm" and name != "conv":  # the test fails if the bias is dropped
                dropped = _own_layers(without_bias, wav)[layer]
                assert (cached[name] - dropped).abs().max() > 50 * bound.max()

    name = "kd"
    spec = parse_students(params)[name]
    assert spec.model.frontend == "cached"
    train = section(params, "train", TrainConfig)
    train_student.run({name: spec}, train, tiny_corpus, tmp_path / "cache",
                      {name: tmp_path / name}, tmp_path / "state.pt")  # fmt: skip
    student, ckpt = load_student(tmp_path / name / CHECKPOINT)  # its frozen conv stack, on
    assert (
        ckpt["teacher_class"] == kind and student.frontend_spec["norm"] == header.frontend["norm"]
    )
    wav = read_utterance(read_manifest(tiny_corpus)[0], tiny_corpus)  # raw audio, is the class's
    with torch.no_grad():
        conv = student.frontend(wav[None], torch.tensor([len(wav)]))[0]
    torch.testing.assert_close(conv, _own_layers(own, wav)[0], rtol=1e-4, atol=1e-5)

    params["evaluate"].update(work_dir=str(tmp_path / "scratch"))
    params["evaluate"]["probe"]["seeds"] = 1
    cfg = section(params, "evaluate", EvaluateConfig)
    teacher = from_dict(TeacherConfig, params["cache_teacher"]["teacher"], "teacher")
    metrics = evaluate_teacher.run(cfg, teacher, tiny_corpus, tmp_path / "teacher.json")
    assert metrics["description"] == f"hf:{encoder_dirs[kind]}"
    assert "wer" in metrics["splits"]["test"]
    if kind != "hubert":  # a student of this class's cache against a HuBERT's cache
        with pytest.raises(CacheFormatError, match=f"trained on a {kind} teacher's cache, .* is a "
                           "hubert teacher's"):  # fmt: skip
            evaluate_student.run(cfg, name, tmp_path / name / CHECKPOINT, tiny_corpus, tiny_cache,
                                 tmp_path / "student.json")  # fmt: skip
