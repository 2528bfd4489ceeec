"""The ASR probe (scoring, decoding, learning from streamed batches), the probe feature store,
the report, and the per-model evaluation stages end to end."""

import json
import random

import jiwer
import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, tiny_params

from pipeline.core.config import from_dict, section
from pipeline.corpus.manifest import read_utterance
from pipeline.corpus.phonemes import normalize_text
from pipeline.evaluation.figures import plot, plot_curves
from pipeline.evaluation.probe import ProbeBatch, ProbeConfig, score, train_probes
from pipeline.evaluation.probe_models import AsrProbe, LinearProbes
from pipeline.evaluation.readout import markdown
from pipeline.evaluation.report import ReportConfig, gather
from pipeline.evaluation.scoring import EvaluateConfig
from pipeline.evaluation.tasks import PR, Reference, Vocabulary, edit_counts, tasks_for
from pipeline.students.checkpoint import CHECKPOINT
from pipeline.teacher.config import TeacherConfig
from pipeline.training.live import read_curves
from stages import evaluate_baseline, evaluate_student, evaluate_teacher, report


def test_normalisation_and_scoring_on_hand_made_pairs():
    assert normalize_text("  The CAT, sat -- on the mat!  ") == "the cat sat on the mat"
    assert normalize_text("It's 4 o'clock.") == "it's 4 o'clock"
    refs = ["the cat sat", "a dog"]
    hyps = ["the cat sit", "a dog"]
    assert jiwer.wer(refs, hyps) == pytest.approx(1 / 5)  # one substitution in five words
    assert jiwer.cer(refs, hyps) == pytest.approx(1 / 16)  # one character in 11 + 5
    assert jiwer.wer("ð ə k a t", "ð ə k t") == pytest.approx(1 / 5)  # PER on phoneme tokens
    errors, tokens = edit_counts(refs, hyps, "words")  # per utterance, summing to jiwer's
    assert (errors, tokens) == ([1, 0], [3, 2])
    errors, tokens = edit_counts(refs, ["the cat sit", ""], "chars")
    assert sum(errors) / sum(tokens) == pytest.approx(jiwer.cer(refs, ["the cat sit", ""]))
    assert edit_counts(["a b"], ["a b c d"], "words") == ([2], [2])  # insertions count


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
            yield ProbeBatch(group, layers[None], lengths)  # one upstream

    train, test = list(refs)[:128], list(refs)[128:]
    params = tiny_params()["evaluate"]["probe"]
    params.update(
        batch_frames=600,
        seeds=1,
        asr={"hidden": 32, "layers": 1, "lr": 0.005, "epochs": 25},
        pr={"lr": 0.01, "epochs": 25},
    )
    cfg = from_dict(ProbeConfig, params, "probe")
    train_refs = {k: refs[k] for k in train}
    plan = [(task, [0]) for task in tasks_for(refs)]
    probes = train_probes(lambda e: batches(train, e), train_refs, plan, (2, 16), cfg, seed=0,
                          device=torch.device("cpu"))  # fmt: skip
    assert [p.task.name for p in probes] == ["asr", "pr"]
    scores = score(probes, batches(test, None), refs, torch.device("cpu"))[0]
    rates = {m: sum(c["errors"]) / sum(c["tokens"]) for m, c in scores.items()}
    assert scores["wer"]["ids"] == sorted(test) and len(scores["per"]["errors"]) == len(test)
    assert rates["wer"] < 0.5 and rates["cer"] < 0.2  # an empty guess scores WER 1.0
    assert rates["per"] < 0.3
    for probe in probes:
        assert probe.curve[-1][0] < probe.curve[0][0] / 2
        first, noise = probe.model.layer_weights()[0]
        assert first > noise  # the weighted sum prefers the informative layer
    assert isinstance(probes[0].model, AsrProbe) and isinstance(probes[1].model, LinearProbes)


def test_stacked_linear_probes_learn_as_each_would_alone():
    """The PR probes of three upstreams trained as one stacked probe (on batches holding the
    same utterances from each) end where each trained alone ends, to float rounding: each
    upstream's part sees only its own layers, gradient, clipping and optimizer state."""
    rng = torch.Generator().manual_seed(1)
    phones = list("abcdefgh")
    refs, feats = {}, {}
    for i in range(48):
        seq = [phones[j] for j in torch.randint(8, (5,), generator=rng).tolist()]
        refs[f"u{i}"] = Reference("", " ".join(seq))
        clean = torch.stack([torch.full((8,), float(phones.index(c))) for c in seq for _ in "xx"])
        feats[f"u{i}"] = [torch.stack([clean * (1 + s) + torch.randn(clean.shape, generator=rng),
                                       torch.randn(clean.shape, generator=rng)])
                          for s in range(3)]  # (L, T, D) for each of 3 upstreams  # fmt: skip

    def batches(upstreams, seed):
        keys = list(refs)
        random.Random(seed).shuffle(keys)
        for i in range(0, len(keys), 6):
            group = keys[i : i + 6]
            lengths = torch.tensor([feats[k][0].shape[1] for k in group])
            layers = torch.stack([
                torch.nn.utils.rnn.pad_sequence([feats[k][s].transpose(0, 1) for k in group],
                                                batch_first=True).transpose(1, 2)
                for s in upstreams])  # fmt: skip
            yield ProbeBatch(group, layers, lengths)

    params = tiny_params()["evaluate"]["probe"]
    params.update(pr={"lr": 0.02, "epochs": 6})
    cfg = from_dict(ProbeConfig, params, "probe")
    cpu = torch.device("cpu")
    together = train_probes(lambda e: batches([0, 1, 2], e), refs, [(PR, [0, 1, 2])], (2, 8),
                            cfg, seed=0, device=cpu)[0]  # fmt: skip
    for s in range(3):
        alone = train_probes(lambda e, s=s: batches([s], e), refs, [(PR, [0])], (2, 8), cfg,
                             seed=0, device=cpu)[0]  # fmt: skip
        for name, value in alone.model.state_dict().items():
            torch.testing.assert_close(together.model.state_dict()[name][s], value[0],
                                       rtol=1e-4, atol=1e-5)  # fmt: skip
        np.testing.assert_allclose([e[s] for e in together.curve], [e[0] for e in alone.curve],
                                   rtol=1e-4)  # fmt: skip


def test_padding_batches_to_a_step_changes_no_valid_frame(tiny_corpus, tiny_cache, tmp_path):
    """Both evaluation passes pad each batch to a multiple of ``pad_seconds`` (a bounded set of
    shapes, so bounded per-shape kernel memory): every upstream (teacher, each student kind,
    fbank) gives the same features for every valid frame, and probe batches come out padded
    to the step with zeros past each length."""
    from pipeline.corpus.manifest import audio_batches, read_manifest
    from pipeline.evaluation.features import StoreBatches, _layers, pad_to_multiple, write_stores
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
    batches = list(audio_batches(utts, tiny_corpus, 3.0))
    for upstream in upstreams:
        plain, padded = {}, {}
        for group, wav, lengths in batches:
            plain.update(_layers(upstream, group, wav, lengths))
            padded.update(_layers(upstream, group, pad_to_multiple(wav, 5120, 1), lengths))
        assert plain.keys() == padded.keys()
        for utt, x in plain.items():
            np.testing.assert_allclose(padded[utt], x, rtol=1e-4, atol=1e-5, err_msg=upstream.name)

    write_stores({0: upstreams[1]}, {"test": utts}, tiny_corpus, {0: tmp_path / "store"}, 3.0,
                 "float16", 0.32)  # fmt: skip
    plain = StoreBatches(tmp_path / "store", "test", 600).epoch(seed=None)
    padded = StoreBatches(tmp_path / "store", "test", 600, pad_seconds=0.32).epoch(seed=None)
    for a, b in zip(plain, padded, strict=True):
        assert a.keys == b.keys and torch.equal(a.lengths, b.lengths)
        assert b.layers.shape[3] % 16 == 0 and b.layers.shape[3] - a.layers.shape[3] < 16
        assert torch.equal(b.layers[:, :, :, : a.layers.shape[3]], a.layers)
        assert not b.layers[:, :, :, a.layers.shape[3] :].any()


def _model(kind, runs, errors, params=1000, **split_extra):
    """An evaluation json: ``errors[metric]`` per run, on three utterances of 10 tokens."""
    ids = ["u0", "u1", "u2"]
    rates = {m: [sum(e) / 30 for e in per_run] for m, per_run in errors.items()}
    scores = {m: {"mean": sum(r) / len(r), "runs": r} for m, r in rates.items()}
    return {"kind": kind, "parameters": params, "rtf": 0.01, "peak_memory_mb": 3.0,
            "runs": runs, "splits": {"test": {**scores, **split_extra}},
            "utterances": {"test": {"ids": ids, "tokens": {m: [10, 10, 10] for m in errors},
                                    "errors": errors}}}  # fmt: skip


def test_report_gives_intervals_and_verdicts_of_the_declared_pairs(tmp_path):
    seeds = [{"train_seed": s, "probe_seed": 0} for s in range(3)]
    probes = [{"train_seed": None, "probe_seed": p} for p in range(2)]
    good = [[1, 1, 1], [1, 1, 2], [1, 2, 1]]  # about 4% PER
    bad = [[6, 6, 7], [6, 7, 6], [7, 6, 6]]  # about 21%
    models = {
        "teacher": _model("teacher", probes, {"per": good[:2], "wer": bad[:2]}),
        "fbank": _model("baseline", probes, {"per": bad[:2], "wer": bad[:2]}, params=0),
        "kd": _model("student", seeds, {"per": good, "wer": bad}, top1_agreement={"mean": 0.4}),
        "ce": _model("student", seeds, {"per": bad, "wer": bad}),
        "ce_other": _model(
            "student", seeds, {"per": [[7, 6, 7], [6, 6, 6], [6, 7, 7]], "wer": good}
        ),  # fmt: skip
        "one": _model("student", seeds[:1], {"per": good[:1], "wer": bad[:1]}),
    }
    for name in ("kd", "ce"):  # one architecture, the same seeds: paired by seed
        models[name]["pairing"] = "lstm-1"
    pairs = [["kd", "ce"], ["ce", "kd"], ["kd", "one"], ["ce_other", "ce"]]
    cfg = ReportConfig(compare=pairs, bootstrap=200)
    metrics = gather(models, "tiny probes", ["test"], cfg)
    per = {pair: c["test"]["per"] for pair, c in metrics["comparisons"].items()}
    assert per["kd vs ce"]["verdict"] == "better" and per["ce vs kd"]["verdict"] == "worse"
    assert per["kd vs ce"]["high"] < 0 < per["ce vs kd"]["low"]
    assert per["kd vs one"]["verdict"] == "not resolved" and per["kd vs one"]["low"] is None
    assert per["kd vs ce"]["design"] == "paired by seed"
    assert per["kd vs one"]["design"] == "unpaired"
    assert per["ce_other vs ce"]["verdict"] == "not resolved"  # about as many PER errors
    assert set(per["ce_other vs ce"]["seeds_needed"]) == {"its_size", "one_point"}
    kd = metrics["models"]["kd"]
    assert "utterances" not in kd and kd["replicates"] == 3
    assert kd["splits"]["test"]["per"]["low"] < kd["splits"]["test"]["per"]["mean"]
    assert metrics["models"]["teacher"]["replicates"] == 2  # probe seeds of a model not trained
    assert "utterances" in models["kd"]  # the inputs are left as they were
    text = markdown(metrics)
    for name in models:
        assert f"| {name} |" in text
    assert "tiny probes" in text and "| kd vs ce | paired by seed (3 seeds) | -" in text
    assert " better |" in text and "What would resolve the rest" in text
    assert "- ce_other vs ce, PER: " in text
    assert "not resolved" in text and "| - |" in text  # missing cells are dashes
    curves = {"kd": {"seed0": [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.0}]}}
    plot(metrics, tmp_path / "report.png")
    plot_curves(curves, tmp_path / "curves.png")
    for image in ("report.png", "curves.png"):
        assert (tmp_path / image).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="report.compare names 'nobody'"):
        gather(models, "p", ["test"], ReportConfig(compare=[["kd", "nobody"]]))


def test_each_model_is_its_own_evaluation_and_the_report_gathers_them(
    tiny_corpus, tiny_cache, tmp_path
):
    """Teacher, baselines and students each scored alone (several probe seeds, a student's
    training seeds, streamed features), then gathered: every model in metrics.json and
    report.md, each run's per-utterance errors kept, a comparison with a one-seed student
    left without an interval."""
    from pipeline.students import parse_students
    from pipeline.training.config import TrainConfig
    from stages import train_student

    params = tiny_params()
    params["evaluate"]["work_dir"] = str(tmp_path / "scratch")
    params["evaluate"]["probe"]["seeds"] = 2
    params["students"]["ce"]["seeds"] = [0, 1]
    del params["students"]["distilhubert"]["seeds"]  # one model, with train.seed
    cfg = section(params, "evaluate", EvaluateConfig)
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
    curves = {n: read_curves(tmp_path / "log", n) for n in dirs}
    assert set(curves["ce"]) == {"ce/seed0", "ce/seed1"} and set(curves["distilhubert"]) == {
        "distilhubert"}  # fmt: skip
    pairs = ReportConfig(compare=[["ce", "distilhubert"]], bootstrap=200)
    metrics = report.run(cfg, pairs, names, out, curves, tmp_path / "eval")
    assert list(metrics["models"]) == names and metrics["splits"] == ["test"]
    runs = {"ce": 4, "distilhubert": 2, "teacher": 2, "fbank": 2}  # seeds x probe seeds
    asr = {**runs, "ce": 2}  # probe.asr.training_seeds: 1, the ASR probe on ce's first seed only
    for name, row in metrics["models"].items():
        scores = row["splits"]["test"]
        assert len(scores["per"]["runs"]) == runs[name] and len(row["probe_curves"]) == runs[name]
        assert len(scores["wer"]["runs"]) == len(scores["cer"]["runs"]) == asr[name]
        assert row["rtf"] > 0
        assert ("top1_agreement" in scores) == (name == "ce")  # students with logits only
    assert metrics["models"]["ce"]["replicates"] == 2
    ce = metrics["models"]["ce"]
    assert [r["metrics"] for r in ce["runs"] if r["train_seed"] == 1] == [["per"]] * 2
    assert (
        ce["splits"]["test"]["wer"]["replicates"] == 1
        and ce["splits"]["test"]["wer"]["low"] is None
    )
    assert len(metrics["models"]["ce"]["splits"]["test"]["top1_agreement"]["seeds"]) == 2
    saved_ce = json.loads((out / "ce.json").read_text())
    test_utts = saved_ce["utterances"]["test"]
    assert len(test_utts["errors"]["per"]) == 4 and len(test_utts["errors"]["per"][0]) == len(
        test_utts["ids"])  # fmt: skip
    one_seed = metrics["comparisons"]["ce vs distilhubert"]["test"]["per"]  # distilhubert: 1
    assert one_seed["verdict"] == "not resolved" and one_seed["low"] is None
    assert metrics["models"]["fbank"]["parameters"] == 0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["models"].keys() == metrics["models"].keys()
    text = (tmp_path / "eval" / "report.md").read_text()
    assert all(f"| {name} |" in text for name in names) and "2 probe seeds" in text
    assert (tmp_path / "eval" / "curves.png").is_file()


def test_evaluation_names_splits_and_subsets():
    from pipeline.corpus.manifest import Utterance
    from pipeline.evaluation.scoring import probe_data

    def utt(i, split, subset):
        return Utterance(f"u{i}", "a.flac", 16000, 16000, "hello", "s", split, "", subset)

    rows = [utt(0, "train", "train-clean-100"), utt(1, "train", "train-other-500"),
            utt(2, "test", "test-clean"), utt(3, "test", "test-other")]  # fmt: skip
    params = tiny_params()
    params["evaluate"]["splits"] = ["test-clean", "test-other"]
    params["evaluate"]["probe"]["train"] = "train-clean-100"
    cfg = section(params, "evaluate", EvaluateConfig)
    data = probe_data(cfg, rows)
    assert set(data.refs) == {"u0", "u2", "u3"} and [t.name for t in data.tasks] == ["asr"]
    assert {k: [u.id for u in v] for k, v in data.splits.items()} == {
        "train-clean-100": ["u0"], "test-clean": ["u2"], "test-other": ["u3"]}  # fmt: skip
    params["evaluate"]["splits"] = ["dev-clean"]
    with pytest.raises(
        ValueError, match="no transcribed utterances in split or subset 'dev-clean'"
    ):
        probe_data(section(params, "evaluate", EvaluateConfig), rows)


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


def test_seeds_that_share_a_frozen_front_end_run_it_once_per_batch(
    tiny_corpus, tiny_cache, tmp_path
):
    """A student's training seeds with the same front-end weights (the teacher's frozen conv
    stack) get their stored layers and their agreement with the teacher from one front-end pass
    per batch, exactly as each alone; seeds whose front ends differ (trained ones) each run
    their own; and efficiency (RTF, memory) always times the whole student, front end
    included."""
    from test_export import TEACHER_CONV

    from pipeline.corpus.manifest import audio_batches, read_manifest
    from pipeline.evaluation.agreement import teacher_agreement
    from pipeline.evaluation.features import StoreBatches, write_stores
    from pipeline.evaluation.upstream import efficiency, student_upstreams
    from pipeline.nn.frames import HUBERT_FRAMES
    from pipeline.nn.lstm import LSTMStudentConfig
    from pipeline.students import STUDENTS
    from pipeline.training.cache_batches import CacheBatches

    def seeds(frontend):
        cfg = LSTMStudentConfig(**{**TINY_MODEL, "frontend": frontend})
        spec = TEACHER_CONV if frontend == "cached" else None
        models = {}
        for seed in (0, 1):
            torch.manual_seed(seed)
            models[seed] = STUDENTS["lstm"](cfg, num_classes=20, frames=HUBERT_FRAMES,
                                            frontend=spec).eval()  # fmt: skip
        if frontend == "cached":  # frozen: the teacher's weights, the same for every seed
            models[1].frontend.load_state_dict(models[0].frontend.state_dict())
        return models

    utts = read_manifest(tiny_corpus)
    for frontend, per_batch in (("cached", 1), ("conv", 2)):
        models = seeds(frontend)
        calls = []
        for model in models.values():
            model.frontend.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        upstreams = student_upstreams("s", models)
        stores = {seed: tmp_path / frontend / str(seed) for seed in models}
        write_stores(upstreams, {"test": utts}, tiny_corpus, stores, 3.0, "float16")
        batches = len(list(audio_batches(utts, tiny_corpus, 3.0)))
        assert len(calls) == len(models) + per_batch * batches > 4, frontend  # + each's header
        for seed in models:  # each seed's stored layers are its own
            for batch in StoreBatches(stores[seed], "test", 10_000).epoch(seed=None):
                for key, layers, n in zip(batch.keys, batch.layers[0], batch.lengths, strict=True):
                    (utt,) = [u for u in utts if u.id == key]
                    wav = read_utterance(utt, tiny_corpus)[None]
                    alone = upstreams[seed].probe_layers(wav, torch.tensor([wav.shape[1]]))[0]
                    torch.testing.assert_close(layers[:, :n], alone[0, :, :n], rtol=1e-3,
                                               atol=1e-3)  # float16 storage  # fmt: skip
        calls.clear()
        cached = CacheBatches(tiny_cache, utts, tiny_corpus, batch_seconds=3.0, seed=0,
                              shuffle=False, pool=0)  # fmt: skip
        together = teacher_agreement(list(models.values()), cached)
        assert len(calls) == per_batch * len(list(cached)) > 2, frontend
        alone = [teacher_agreement([model], cached)[0] for model in models.values()]
        assert together == alone and together[0] != together[1]
        calls.clear()
        efficiency(upstreams[0], seconds=0.5, repeats=2)
        assert len(calls) >= 4  # warm-up, 2 timed forwards, the memory pass: all of them


def test_phonemes_from_a_lexicon_or_espeak(tmp_path):
    """References' phonemes for any corpus with text: a LibriSpeech-format lexicon (first
    pronunciation wins, stress dropped unless asked for), a word it lacks named with its
    utterance, a malformed line named; eSpeak NG's phonemizer on the normalised words."""
    from pipeline.core.errors import CorpusError
    from pipeline.corpus.manifest import Utterance
    from pipeline.corpus.phonemes import PHONEMIZERS, LexiconConfig, read_lexicon

    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("CAT\tK AE1 T\nCAT K AA1 T\nTHE  DH AH0\nIT'S IH1 T S\n")
    utt = Utterance("u1", "a.flac", 16000, 16000, "The cat, it's", "s", "test")
    plain = PHONEMIZERS["lexicon"](LexiconConfig(str(lexicon)))
    assert plain(utt) == "DH AH K AE T IH T S"
    stressed = PHONEMIZERS["lexicon"](LexiconConfig(str(lexicon), stress=True))
    assert stressed(utt) == "DH AH0 K AE1 T IH1 T S"
    unknown = Utterance("u2", "a.flac", 16000, 16000, "the dog", "s", "test")
    with pytest.raises(CorpusError, match=r"no pronunciation of 'dog' \(utterance u2\)"):
        plain(unknown)
    bad = tmp_path / "bad.txt"
    bad.write_text("CAT K AE1 T\nDOG\n")
    with pytest.raises(CorpusError, match=r"bad.txt:2: expected 'WORD PH1 PH2 ...'"):
        read_lexicon(str(bad), False)
    espeak = PHONEMIZERS["espeak"](PHONEMIZERS["espeak"].config_type(voice="en-us"))
    phones = espeak(utt).split()
    assert phones and "k" in phones and "t" in phones  # IPA, stress marks removed
    assert "ˈ" not in "".join(phones)
