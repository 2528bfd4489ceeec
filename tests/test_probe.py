"""The ASR probe (scoring, decoding, learning from streamed batches), the probe feature store,
the report, and the per-model evaluation stages end to end."""

import json
import random

import jiwer
import numpy as np
import pytest
import torch
from conftest import tiny_params

from pipeline.core.config import from_dict, section
from pipeline.evaluation.probe import (
    ProbeBatch,
    ProbeConfig,
    Reference,
    Vocabulary,
    normalize_text,
    score,
    train_probe,
)
from pipeline.evaluation.report import markdown, overlapping, write_report
from pipeline.evaluation.scoring import EvaluateConfig
from pipeline.students.checkpoint import CHECKPOINT
from pipeline.teacher.config import TeacherConfig
from pipeline.training.live import read_curve
from stages import evaluate_baseline, evaluate_student, evaluate_teacher, report


def test_normalisation_and_scoring_on_hand_made_pairs():
    assert normalize_text("  The CAT, sat -- on the mat!  ") == "the cat sat on the mat"
    assert normalize_text("It's 4 o'clock.") == "it's 4 o'clock"
    refs = ["the cat sat", "a dog"]
    hyps = ["the cat sit", "a dog"]
    assert jiwer.wer(refs, hyps) == pytest.approx(1 / 5)  # one substitution in five words
    assert jiwer.cer(refs, hyps) == pytest.approx(1 / 16)  # one character in 11 + 5
    assert jiwer.wer("ð ə k a t", "ð ə k t") == pytest.approx(1 / 5)  # PER on phoneme tokens


def test_greedy_ctc_decoding_merges_repeats_and_drops_blanks():
    vocab = Vocabulary([list("ab")])  # blank 0, a 1, b 2
    path = torch.tensor([1, 1, 0, 1, 2, 2, 0, 0, 2])
    logits = torch.nn.functional.one_hot(path, 3).float()
    assert vocab.greedy(logits) == list("aabb")


def test_probe_learns_a_tiny_synthetic_task_from_streamed_batches():
    """Each character is a fixed random vector held for 3 frames, plus noise (a learnable
    'acoustics'); a second layer is pure noise. Batches are handed out one at a time."""
    lexicon = ["cat", "dog", "sees", "big", "red", "the", "a", "ball"]
    rng = torch.Generator().manual_seed(0)
    table = {c: torch.randn(16, generator=rng) for c in "abcdefghijklmnopqrstuvwxyz '"}
    refs, feats = {}, {}
    for i in range(160):
        idx = torch.randint(len(lexicon), (3,), generator=rng).tolist()
        words = " ".join(lexicon[j] for j in idx)
        x = torch.stack([table[c] for c in words for _ in range(3)])
        x = x + 0.3 * torch.randn(x.shape, generator=rng)
        feats[f"u{i}"] = torch.stack([x, torch.randn(x.shape, generator=rng)])  # (L, T, D)
        refs[f"u{i}"] = Reference(words, " ".join(words.replace(" ", "")))

    def batches(keys, seed):
        keys = list(keys)
        random.Random(seed).shuffle(keys)
        for i in range(0, len(keys), 8):
            group = keys[i : i + 8]
            lengths = torch.tensor([feats[k].shape[1] for k in group])
            layers = torch.nn.utils.rnn.pad_sequence([feats[k].transpose(0, 1) for k in group],
                                                     batch_first=True).transpose(1, 2)  # fmt: skip
            yield ProbeBatch(group, layers, lengths)

    train, test = list(refs)[:128], list(refs)[128:]
    cfg = ProbeConfig(hidden=32, layers=1, epochs=25, batch_frames=600, lr=0.005, train="train",
                      train_utterances=0, seeds=1)  # fmt: skip
    model, vocabs, curve = train_probe(
        lambda e: batches(train, e),
        {k: refs[k] for k in train},
        (2, 16),
        cfg,
        seed=0,
        device=torch.device("cpu"),
    )
    scores = score(model, vocabs, batches(test, None), refs, torch.device("cpu"))
    assert scores["wer"] < 0.5 and scores["cer"] < 0.2  # an empty guess scores WER 1.0
    assert "per" in scores and scores["per"] < 0.3
    assert curve[-1] < curve[0] / 2
    first, noise = model.weights.softmax(0).tolist()
    assert first > noise  # the weighted sum prefers the informative layer


def test_padding_batches_to_a_step_changes_no_valid_frame(tiny_corpus, tiny_cache, tmp_path):
    """Both evaluation passes pad each batch to a multiple of ``pad_seconds`` (a bounded set of
    shapes, so bounded per-shape kernel memory): every upstream (teacher, each student kind,
    fbank) gives the same features for every valid frame, and probe batches come out padded
    to the step with zeros past each length."""
    from pipeline.corpus.manifest import read_manifest
    from pipeline.evaluation.features import StoreBatches, _layers, write_store
    from pipeline.evaluation.upstream import Upstream, fbank_layers
    from pipeline.nn.frames import HUBERT_FRAMES
    from pipeline.students import parse_students
    from pipeline.students.checkpoint import build_student
    from pipeline.teacher.sources import build_teacher
    from storage import read_frontend, read_header

    params = tiny_params()
    torch.manual_seed(0)
    teacher = build_teacher(section(params["cache_teacher"], "teacher", TeacherConfig),
                            with_kmeans=False)  # fmt: skip
    upstreams = [Upstream("teacher", "teacher", teacher.hidden_states, teacher),
                 Upstream("fbank", "baseline", fbank_layers(HUBERT_FRAMES), None)]  # fmt: skip
    for name, student in parse_students(params).items():
        header = read_header(tiny_cache)
        dims = {k: v["dim"] for k, v in header.features.items()}
        model = build_student(student, header.num_classes, HUBERT_FRAMES,
                              read_frontend(tiny_cache), dims).eval()  # fmt: skip
        upstreams.append(Upstream(name, "student", model.extract_features, model))
    utts = read_manifest(tiny_corpus)
    for upstream in upstreams:
        plain = dict(_layers(upstream, utts, tiny_corpus, 3.0, 0))
        padded = dict(_layers(upstream, utts, tiny_corpus, 3.0, 5120))
        assert plain.keys() == padded.keys()
        for utt, x in plain.items():
            np.testing.assert_allclose(padded[utt], x, rtol=1e-4, atol=1e-5, err_msg=upstream.name)

    write_store(upstreams[1], {"test": utts}, tiny_corpus, tmp_path / "store", 3.0, "float16", 0.32)
    plain = StoreBatches(tmp_path / "store", "test", 600).epoch(seed=None)
    padded = StoreBatches(tmp_path / "store", "test", 600, pad_seconds=0.32).epoch(seed=None)
    for a, b in zip(plain, padded, strict=True):
        assert a.keys == b.keys and torch.equal(a.lengths, b.lengths)
        assert b.layers.shape[2] % 16 == 0 and b.layers.shape[2] - a.layers.shape[2] < 16
        assert torch.equal(b.layers[:, :, : a.layers.shape[2]], a.layers)
        assert not b.layers[:, :, a.layers.shape[2] :].any()


def _row(kind, wers, params=1000, **split_extra):
    wer = {"mean": sum(wers) / len(wers), "min": min(wers), "max": max(wers), "seeds": wers}
    return {"kind": kind, "parameters": params, "rtf": 0.01, "peak_memory_mb": 3.0,
            "splits": {"test": {"wer": wer, "cer": wer, **split_extra}}}  # fmt: skip


def test_report_marks_differences_within_the_seed_spread(tmp_path):
    models = {
        "teacher": _row("teacher", [0.30, 0.32]),
        "fbank": _row("baseline", [0.60, 0.62], params=0),
        "kd": _row("student", [0.40, 0.45], top1_agreement=0.4),
        "dkd": _row("student", [0.44, 0.50], top1_agreement=0.5),
    }
    metrics = {"splits": ["test"], "probe": "a tiny probe", "models": models}
    assert overlapping(models, "test", "kd") == ["dkd"]
    assert overlapping(models, "test", "teacher") == []
    text = markdown(metrics)
    for name in models:
        assert f"| {name} |" in text
    assert "a tiny probe" in text and "40.0%" in text and "42.5% (40.0%-45.0%)" in text
    assert "| - |" in text  # missing cells are dashes
    curves = {"kd": [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.0}]}
    write_report(metrics, curves, tmp_path)
    for image in ("report.png", "curves.png"):
        assert (tmp_path / image).read_bytes()[:4] == b"\x89PNG"


def test_each_model_is_its_own_evaluation_and_the_report_gathers_them(
    tiny_corpus, tiny_cache, tmp_path
):
    """Teacher, baselines and students each scored alone (several probe seeds, streamed
    features), then gathered: every model in metrics.json and report.md, with the spread."""
    from pipeline.students import parse_students
    from pipeline.training.config import TrainConfig
    from stages import train_student

    params = tiny_params()
    params["evaluate"]["work_dir"] = str(tmp_path / "scratch")
    cfg = section(params, "evaluate", EvaluateConfig)
    assert cfg.probe.seeds == 2
    teacher = from_dict(TeacherConfig, params["cache_teacher"]["teacher"], "teacher")
    students = parse_students(params)
    chosen = {k: students[k] for k in ("ce", "distilhubert")}
    dirs = {k: tmp_path / "students" / k for k in chosen}
    train_student.run(chosen, section(params, "train", TrainConfig), tiny_corpus, tiny_cache,
                      dirs, tmp_path / "state.pt", tmp_path / "log", sweep=True)  # fmt: skip
    out = tmp_path / "eval" / "models"
    evaluate_teacher.run(cfg, teacher, tiny_corpus, out / "teacher.json")
    evaluate_baseline.run(cfg, "fbank", teacher, tiny_corpus, out / "fbank.json")
    for name, folder in dirs.items():
        evaluate_student.run(cfg, name, folder / CHECKPOINT, tiny_corpus, tiny_cache,
                             out / f"{name}.json")  # fmt: skip
    assert not list(out.glob(".*"))  # nothing beside the metrics
    assert not list((tmp_path / "scratch").iterdir())  # the probe features are gone
    names = ["teacher", "fbank", "ce", "distilhubert"]
    curves = {n: read_curve(tmp_path / "log", n) for n in dirs}
    metrics = report.run(cfg, names, out, curves, tmp_path / "eval")
    assert list(metrics["models"]) == names and metrics["splits"] == ["test"]
    for name, row in metrics["models"].items():
        scores = row["splits"]["test"]
        assert {"wer", "cer", "per"} <= set(scores) and len(scores["wer"]["seeds"]) == 2
        assert len(row["probe_curves"]) == 2 and row["rtf"] > 0
        assert ("top1_agreement" in scores) == (name == "ce")  # students with logits only
    assert metrics["models"]["fbank"]["parameters"] == 0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["models"].keys() == metrics["models"].keys()
    text = (tmp_path / "eval" / "report.md").read_text()
    assert all(f"| {name} |" in text for name in names) and "2 seeds" in text
    assert (tmp_path / "eval" / "curves.png").is_file()


def test_evaluation_names_splits_and_subsets():
    from pipeline.corpus.manifest import Utterance
    from pipeline.evaluation.scoring import probe_splits

    def utt(i, split, subset):
        return Utterance(f"u{i}", "a.flac", 16000, 16000, "hello", "s", split, "", subset)

    rows = [utt(0, "train", "train-clean-100"), utt(1, "train", "train-other-500"),
            utt(2, "test", "test-clean"), utt(3, "test", "test-other")]  # fmt: skip
    params = tiny_params()
    params["evaluate"]["splits"] = ["test-clean", "test-other"]
    params["evaluate"]["probe"]["train"] = "train-clean-100"
    cfg = section(params, "evaluate", EvaluateConfig)
    splits = probe_splits(cfg, rows)
    assert {k: [u.id for u in v] for k, v in splits.items()} == {
        "train-clean-100": ["u0"], "test-clean": ["u2"], "test-other": ["u3"]}  # fmt: skip
    params["evaluate"]["splits"] = ["dev-clean"]
    with pytest.raises(
        ValueError, match="no transcribed utterances in split or subset 'dev-clean'"
    ):
        probe_splits(section(params, "evaluate", EvaluateConfig), rows)


def test_probe_features_refuse_a_scratch_folder_without_room(tiny_corpus, tmp_path, monkeypatch):
    """The disk the features need is known before any is written: too little free space is a
    one-line error naming the setting, and nothing is left behind."""
    import shutil
    from collections import namedtuple

    from pipeline.core.errors import OutputError

    params = tiny_params()
    params["evaluate"]["work_dir"] = str(tmp_path / "scratch")
    cfg = section(params, "evaluate", EvaluateConfig)
    teacher = from_dict(TeacherConfig, params["cache_teacher"]["teacher"], "teacher")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(OutputError, match="set evaluate.work_dir"):
        evaluate_baseline.run(cfg, "fbank", teacher, tiny_corpus, tmp_path / "fbank.json")
    assert not list((tmp_path / "scratch").iterdir()) and not (tmp_path / "fbank.json").exists()
