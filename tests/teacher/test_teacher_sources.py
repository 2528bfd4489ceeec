"""Teacher sources on tiny models built here: hf: dirs, fairseq: checkpoints, k-means teachers."""

import argparse
import random
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_KMEANS, tiny_params, with_kmeans
from transformers import HubertConfig, HubertModel

from pipeline.core.config import from_dict, section
from pipeline.core.errors import CheckpointError
from pipeline.corpus.manifest import read_manifest
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.head import ClusterHead
from pipeline.teacher.sources import build_teacher, save_teacher

CONV = "[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2"
D, FFN, LAYERS, PROJ, CLUSTERS = 32, 64, 2, 8, 12


def _cfg(source, **overrides) -> TeacherConfig:
    raw = tiny_params()["cache_teacher"]["teacher"]
    raw.update({"source": source, "kmeans": dict(TINY_KMEANS), **overrides})
    return from_dict(TeacherConfig, raw, "teacher")


def _wavs(*lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=g) for n in lengths]


def _tiny_hf(norm: str) -> HubertModel:
    torch.manual_seed(0)
    return HubertModel(
        HubertConfig(
            hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=FFN,
            conv_dim=(16,) * 7, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        )
    ).eval()  # fmt: skip


# --- hf: ------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_hf_dir_with_head_matches_a_plain_forward_and_batches_exactly(tmp_path, norm):
    encoder = _tiny_hf(norm)
    head = ClusterHead(D, PROJ, CLUSTERS, 0.1)
    save_teacher(tmp_path / "t", encoder, head, {"corpus": "test"})
    teacher = build_teacher(_cfg(f"hf:{tmp_path / 't'}"))
    assert teacher.num_classes == CLUSTERS
    wavs = _wavs(16_000, 9_999, 3_000, 400)
    batched = teacher.outputs(wavs)
    for wav, (logits, targets, _) in zip(wavs, batched, strict=True):
        with torch.no_grad():
            reference = head(encoder(wav[None]).last_hidden_state)[0]
        assert logits.shape == (teacher.frames.num_frames(len(wav)), CLUSTERS)
        torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(targets, logits.argmax(-1))


def test_hf_dir_without_head_needs_kmeans(tmp_path):
    from pipeline.teacher.kmeans import fit_centroids

    _tiny_hf("group").save_pretrained(tmp_path / "plain")
    with pytest.raises(
        CheckpointError, match="has no cluster head: set cache_teacher.teacher.logits: kmeans"
    ):
        build_teacher(_cfg(f"hf:{tmp_path / 'plain'}"))
    cfg = _cfg(f"hf:{tmp_path / 'plain'}", logits="kmeans", targets="kmeans")
    teacher = build_teacher(cfg)  # its centroids are fitted by stage one (teacher.fitting)
    with pytest.raises(ValueError, match="need a k-means model"):
        teacher.outputs(_wavs(8_000))
    feats = [teacher.encode([w], cfg.kmeans.layer)[1][0] for w in _wavs(16_000, 12_000, 8_000)]
    teacher.use_kmeans(fit_centroids(torch.cat(feats).numpy(), cfg.kmeans.num_clusters, 0))
    assert (
        teacher.num_classes == cfg.kmeans.num_clusters
        and teacher.target_source == "kmeans(layer=1)"
    )
    ((logits, targets, _),) = teacher.outputs(_wavs(8_000, seed=5))
    # k-means targets are the nearest centroid, i.e. the argmax of distance logits
    torch.testing.assert_close(targets, logits.argmax(-1))
    again = build_teacher(cfg, centroids=teacher.kmeans.centroids.numpy())
    assert again.fingerprint() == teacher.fingerprint()


def test_hf_hub_id_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1 is set.*hf:<that dir>"):
        build_teacher(_cfg("hf:facebook/hubert-base-ls960"))


# --- fairseq: -------------------------------------------------------------------------------


def _fairseq_state(mode: str) -> dict[str, torch.Tensor]:
    """Random weights under fairseq's own parameter names (written out independently)."""
    g = torch.Generator().manual_seed(1)

    def t(*shape):
        return 0.2 * torch.randn(*shape, generator=g)

    s = {}
    kernels = [10, 3, 3, 3, 3, 2, 2]
    for i, k in enumerate(kernels):
        s[f"feature_extractor.conv_layers.{i}.0.weight"] = t(16, 1 if i == 0 else 16, k)
        if mode == "layer_norm":
            s[f"feature_extractor.conv_layers.{i}.2.1.weight"] = 1 + t(16)
            s[f"feature_extractor.conv_layers.{i}.2.1.bias"] = t(16)
    if mode == "default":
        s["feature_extractor.conv_layers.0.2.weight"] = 1 + t(16)
        s["feature_extractor.conv_layers.0.2.bias"] = t(16)
    s.update({"layer_norm.weight": 1 + t(16), "layer_norm.bias": t(16)})
    s.update(
        {"post_extract_proj.weight": t(D, 16), "post_extract_proj.bias": t(D), "mask_emb": t(D)}
    )
    s.update(
        {
            "encoder.pos_conv.0.weight_g": 1 + t(1, 1, 16).abs(),
            "encoder.pos_conv.0.weight_v": t(D, D // 4, 16),
        }
    )
    s.update(
        {
            "encoder.pos_conv.0.bias": t(D),
            "encoder.layer_norm.weight": 1 + t(D),
            "encoder.layer_norm.bias": t(D),
        }
    )
    for layer in range(LAYERS):
        p = f"encoder.layers.{layer}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            s.update({f"{p}self_attn.{proj}.weight": t(D, D), f"{p}self_attn.{proj}.bias": t(D)})
        s.update(
            {f"{p}self_attn_layer_norm.weight": 1 + t(D), f"{p}self_attn_layer_norm.bias": t(D)}
        )
        s.update(
            {
                f"{p}fc1.weight": t(FFN, D),
                f"{p}fc1.bias": t(FFN),
                f"{p}fc2.weight": t(D, FFN),
                f"{p}fc2.bias": t(D),
            }
        )
        s.update({f"{p}final_layer_norm.weight": 1 + t(D), f"{p}final_layer_norm.bias": t(D)})
    s.update(
        {
            "final_proj.weight": t(PROJ, D),
            "final_proj.bias": t(PROJ),
            "label_embs_concat": t(4 + CLUSTERS, PROJ),
        }
    )
    return s


def _fake_fairseq_dictionary(symbols):
    """A pickled object that claims to be fairseq.data.dictionary.Dictionary, as real files do."""
    module = types.ModuleType("fairseq.data.dictionary")

    class Dictionary:
        pass

    Dictionary.__module__ = "fairseq.data.dictionary"
    Dictionary.__qualname__ = "Dictionary"
    module.Dictionary = Dictionary
    d = Dictionary()
    d.symbols, d.count, d.indices = (
        list(symbols),
        [1] * len(symbols),
        {s: i for i, s in enumerate(symbols)},
    )
    return module, d


def _write_fairseq(path, mode, old_style=False, legacy=False):
    model_cfg = {
        "_name": "hubert", "extractor_mode": mode, "conv_feature_layers": CONV, "conv_bias": False,
        "encoder_embed_dim": D, "encoder_layers": LAYERS, "encoder_attention_heads": 2,
        "encoder_ffn_embed_dim": FFN, "activation_fn": "gelu",
        "layer_norm_first": mode == "layer_norm",
        "conv_pos": 16, "conv_pos_groups": 4, "final_dim": PROJ, "logit_temp": 0.1,
    }  # fmt: skip
    normalize = mode == "layer_norm"
    clusters = [str(c) for c in range(CLUSTERS)]
    random.Random(0).shuffle(clusters)  # rows are matched through symbols, never by position
    symbols = ["<s>", "<pad>", "</s>", "<unk>", *clusters]
    module, dictionary = _fake_fairseq_dictionary(symbols)
    names = ["fairseq", "fairseq.data", "fairseq.data.dictionary"]
    for name in names[:-1]:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[names[-1]] = module
    try:
        ckpt = {"model": _fairseq_state(mode), "task_state": {"dictionaries": [dictionary]}}
        if old_style:
            ckpt["args"] = argparse.Namespace(**model_cfg, normalize=normalize)
            ckpt["cfg"] = None
        else:
            ckpt["cfg"] = {"model": model_cfg, "task": {"normalize": normalize}}
        torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    finally:
        for name in names:
            sys.modules.pop(name, None)
    return ckpt["model"], symbols, normalize


def _torchaudio_reference(state, mode):
    from torchaudio.models import wav2vec2_model
    from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict

    model = wav2vec2_model(
        extractor_mode="group_norm" if mode == "default" else "layer_norm",
        extractor_conv_layer_config=[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2,
        extractor_conv_bias=False, encoder_embed_dim=D, encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4, encoder_num_layers=LAYERS,
        encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=FFN,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
        encoder_layer_norm_first=mode == "layer_norm",
        encoder_layer_drop=0.0, aux_num_out=None,
    )  # fmt: skip
    encoder_state = {
        k: v
        for k, v in state.items()
        if k not in ("label_embs_concat", "final_proj.weight", "final_proj.bias")
    }
    model.load_state_dict(_convert_state_dict(encoder_state))
    return model.eval()


def test_untrusted_fairseq_pickle_is_refused(tmp_path):
    _write_fairseq(tmp_path / "hubert.pt", "default")
    with pytest.raises(
        CheckpointError, match=r"fairseq\.data\.dictionary\.Dictionary.*--trust-checkpoint"
    ):
        build_teacher(_cfg(f"fairseq:{tmp_path / 'hubert.pt'}"))


@pytest.mark.parametrize(
    ("mode", "old_style", "legacy"),
    [("default", False, False), ("layer_norm", False, False), ("default", True, False),
     ("default", True, True)],  # legacy: torch's pre-zip format, as some older releases are
)  # fmt: skip
def test_fairseq_checkpoint_matches_torchaudio_and_the_head_math(tmp_path, mode, old_style, legacy):
    state, symbols, normalize = _write_fairseq(tmp_path / "hubert.pt", mode, old_style, legacy)
    teacher = build_teacher(_cfg(f"fairseq:{tmp_path / 'hubert.pt'}", trust_checkpoint=True))
    assert teacher.normalize == normalize and teacher.num_classes == CLUSTERS
    reference = _torchaudio_reference(state, mode)
    wavs = _wavs(12_000, 7_001, 2_000)
    final, _, frame_lengths = teacher.encode(wavs)
    outputs = teacher.outputs(wavs)
    for i, wav in enumerate(wavs):
        x = F.layer_norm(wav, wav.shape) if normalize else wav
        with torch.no_grad():
            expected, _ = reference(x[None])
        n = int(frame_lengths[i])
        torch.testing.assert_close(final[i, :n], expected[0], rtol=1e-4, atol=1e-4)
        # head: cosine(final_proj(x), embedding of cluster c) / 0.1, rows found via the symbols
        proj = expected[0] @ state["final_proj.weight"].T + state["final_proj.bias"]
        rows = [symbols.index(str(c)) for c in range(CLUSTERS)]
        embs = state["label_embs_concat"][rows]
        logits = F.cosine_similarity(proj[:, None, :], embs[None], dim=-1) / 0.1
        torch.testing.assert_close(outputs[i][0], logits, rtol=1e-4, atol=1e-4)


def test_fairseq_untrusted_kmeans_file_is_refused(tmp_path):
    import joblib
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=2, n_init=1).fit([[0.0] * D, [1.0] * D, [2.0] * D])
    joblib.dump(km, tmp_path / "km.bin")
    _tiny_hf("group").save_pretrained(tmp_path / "plain")
    kmeans = dict(TINY_KMEANS, path=str(tmp_path / "km.bin"))
    with pytest.raises(
        CheckpointError, match="km.bin: a joblib/scikit-learn k-means file is a pickle"
    ):
        build_teacher(_cfg(f"hf:{tmp_path / 'plain'}", logits="kmeans", kmeans=kmeans))
    teacher = build_teacher(
        _cfg(f"hf:{tmp_path / 'plain'}", logits="kmeans", kmeans=kmeans, trust_checkpoint=True)
    )
    torch.testing.assert_close(
        teacher.kmeans.centroids, torch.tensor(km.cluster_centers_, dtype=torch.float32)
    )


# --- from the CLI, on the demo corpus --------------------------------------------------------


def test_every_source_caches_the_demo_corpus_from_the_cli(tmp_path, tiny_corpus, monkeypatch):
    from conftest import write_params
    from typer.testing import CliRunner

    from cli.main import app
    from storage import open_cache

    monkeypatch.chdir(tmp_path)
    params = tiny_params()
    params["students"] = {"kd": params["students"]["kd"]}
    write_params(tmp_path / "params.yaml", params)
    save_teacher(tmp_path / "with-head", _tiny_hf("group"), ClusterHead(D, PROJ, CLUSTERS, 0.1), {})
    _tiny_hf("layer").save_pretrained(tmp_path / "plain")
    _write_fairseq(tmp_path / "hubert.pt", "default")
    runs = {
        "hf-head": ["--teacher", f"hf:{tmp_path / 'with-head'}"],
        "fairseq": ["--teacher", f"fairseq:{tmp_path / 'hubert.pt'}", "--trust-checkpoint"],
    }
    runner = CliRunner()
    for name, args in runs.items():
        out = tmp_path / name
        result = runner.invoke(
            app, ["cache-teacher", "--manifest", str(tiny_corpus), "--out", str(out), *args]
        )
        assert result.exit_code == 0, result.output
        header = open_cache(out).header
        assert header.num_utterances == len(read_manifest(tiny_corpus))
        assert header.num_classes == CLUSTERS
        assert header.teacher.startswith(args[1].split(":")[0])
    result = runner.invoke(app, ["cache-teacher", "--manifest", str(tiny_corpus), "--out", "x",
                                 "--teacher", f"fairseq:{tmp_path / 'hubert.pt'}"])  # fmt: skip
    assert result.exit_code == 1 and "--trust-checkpoint" in result.output
    # k-means logits and targets from a head-less model, fitted inside stage one
    with_kmeans(params, source=f"hf:{tmp_path / 'plain'}", logits="kmeans", targets="kmeans")
    write_params(tmp_path / "params.yaml", params)
    result = runner.invoke(app, ["cache-teacher", "--manifest", str(tiny_corpus), "--out", "km"])
    assert result.exit_code == 0, result.output
    header = open_cache(tmp_path / "km").header
    assert header.target_source == "kmeans(layer=1)" and header.num_classes == 8
    # stage two refuses a cache from another teacher than the one it expects
    params["train"]["expect_teacher"] = "0" * 16
    write_params(tmp_path / "params.yaml", params)
    result = runner.invoke(
        app, ["train-student", "kd", "--manifest", str(tiny_corpus), "--cache", "km"]
    )
    assert result.exit_code == 1 and "is not the expected" in result.output
    params["train"]["expect_teacher"] = header.fingerprint[:12]
    write_params(tmp_path / "params.yaml", params)
    result = runner.invoke(
        app, ["train-student", "kd", "--manifest", str(tiny_corpus), "--cache", "km"]
    )
    assert result.exit_code == 0, result.output


def test_students_can_start_from_the_teachers_conv_stack(tmp_path, tiny_corpus):
    from pipeline.students import parse_students
    from pipeline.students.checkpoint import build_student, load_student, save_student
    from stages import cache_teacher
    from storage import open_cache, read_frontend

    encoder = _tiny_hf("group")
    save_teacher(tmp_path / "t", encoder, ClusterHead(D, PROJ, CLUSTERS, 0.1), {})
    params = tiny_params()
    params["cache_teacher"]["teacher"]["source"] = f"hf:{tmp_path / 't'}"
    cfg = section(params, "cache_teacher", CacheTeacherConfig)
    cache_teacher.run(cfg, tiny_corpus, tmp_path / "cache")
    header = open_cache(tmp_path / "cache").header
    assert header.frontend["norm"] == "group" and "frontend.safetensors" in header.checksums

    params["students"]["kd"]["model"]["frontend_init"] = "teacher"
    spec = parse_students(params)["kd"]
    frames = build_teacher(_cfg(f"hf:{tmp_path / 't'}")).frames
    student = build_student(spec, CLUSTERS, frames, read_frontend(tmp_path / "cache")).eval()
    for key, value in encoder.feature_extractor.state_dict().items():
        torch.testing.assert_close(student.frontend.net.state_dict()[key], value)
    # a group-norm front end runs per utterance: batched equals alone
    wavs = _wavs(12_000, 5_000)
    batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    with torch.no_grad():
        logits, lengths = student(batch, torch.tensor([12_000, 5_000]))
        alone, _ = student(wavs[1][None], torch.tensor([5_000]))
    torch.testing.assert_close(logits[1, : lengths[1]], alone[0], rtol=1e-5, atol=1e-5)
    save_student(tmp_path / "s.pt", {0: student}, spec, {})
    loaded, _ = load_student(tmp_path / "s.pt")
    assert loaded.frontend_spec == student.frontend_spec


def test_teacher_dirs_record_waveform_normalisation(tmp_path):
    save_teacher(
        tmp_path / "t", _tiny_hf("layer"), ClusterHead(D, PROJ, CLUSTERS, 0.1), {}, normalize=True
    )
    assert build_teacher(_cfg(f"hf:{tmp_path / 't'}")).normalize is True
    save_teacher(tmp_path / "u", _tiny_hf("layer"), ClusterHead(D, PROJ, CLUSTERS, 0.1), {})
    assert build_teacher(_cfg(f"hf:{tmp_path / 'u'}")).normalize is False


def test_kmeans_targets_must_match_the_head(tmp_path):
    save_teacher(tmp_path / "t", _tiny_hf("group"), ClusterHead(D, PROJ, CLUSTERS, 0.1), {})
    cfg = _cfg(f"hf:{tmp_path / 't'}", targets="kmeans")  # 8 clusters vs a 12-class head
    with pytest.raises(CheckpointError, match="8 clusters but the head predicts 12"):
        build_teacher(cfg, centroids=np.zeros((8, D), dtype=np.float32))


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_the_conv_stack_runs_batched_exactly_as_alone(norm):
    """One padded pass (a masked group norm for group-norm stacks) gives every utterance the
    conv features and normalised waveform it gets alone."""
    from pipeline.nn.conv import conv_features, normalize_waveforms

    stack = _tiny_hf(norm).feature_extractor
    wavs = _wavs(16_000, 3_001, 400, 9_999, seed=3)
    lengths = torch.tensor([len(w) for w in wavs])
    batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    with torch.no_grad():
        batched = conv_features(stack, batch, lengths)
        normed = normalize_waveforms(batch, lengths)
        for i, wav in enumerate(wavs):
            alone = stack(wav[None]).transpose(1, 2)[0]
            torch.testing.assert_close(batched[i, : len(alone)], alone, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(normed[i, : len(wav)], F.layer_norm(wav, wav.shape))
            assert not normed[i, len(wav) :].any()
