"""The ASR probe (scoring, decoding, learning), the report, and evaluation end to end."""

import json

import jiwer
import pytest
import torch
from conftest import tiny_params

from pipeline.core.config import from_dict, section
from pipeline.evaluation.probe import (
    ProbeConfig,
    Sample,
    Vocabulary,
    normalize_text,
    train_and_score,
)
from pipeline.evaluation.report import markdown, write_report
from pipeline.teacher.config import TeacherConfig
from stages import evaluate


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


def test_probe_learns_a_tiny_synthetic_task():
    """Each character is a fixed random vector held for 3 frames, plus noise (a learnable
    'acoustics'); a second layer is pure noise."""
    lexicon = ["cat", "dog", "sees", "big", "red", "the", "a", "ball"]
    rng = torch.Generator().manual_seed(0)
    table = {c: torch.randn(16, generator=rng) for c in "abcdefghijklmnopqrstuvwxyz '"}

    def sample():
        idx = torch.randint(len(lexicon), (3,), generator=rng).tolist()
        words = " ".join(lexicon[i] for i in idx)
        x = torch.stack([table[c] for c in words for _ in range(3)])
        x = x + 0.3 * torch.randn(x.shape, generator=rng)
        noise = torch.randn(x.shape, generator=rng)
        return Sample(torch.stack([x, noise]).half(), words, " ".join(words.replace(" ", "")))

    samples = [sample() for _ in range(160)]
    cfg = ProbeConfig(hidden=32, layers=1, epochs=25, batch_frames=600, lr=0.005,
                      train_utterances=0, seed=0)  # fmt: skip
    scores = train_and_score(samples[:128], samples[128:], cfg, "synthetic")
    assert scores["wer"] < 0.5 and scores["cer"] < 0.2  # an empty guess scores WER 1.0
    assert "per" in scores and scores["per"] < 0.3
    first, noise = scores["layer_weights"]
    assert first > noise  # the weighted sum prefers the informative layer


def test_report_lists_every_model(tmp_path):
    row = {"parameters": 1000, "wer": 0.5, "cer": 0.2, "rtf": 0.01, "peak_memory_mb": 3.0}
    metrics = {
        "split": "test", "teacher": "t", "device": "cpu", "efficiency_seconds": 10.0,
        "models": {"teacher": {**row, "kind": "teacher"}, "fbank": {**row, "kind": "baseline",
                   "parameters": 0}, "kd": {**row, "kind": "student", "top1_agreement": 0.4}},
    }  # fmt: skip
    text = markdown(metrics)
    for name in ("teacher", "fbank", "kd"):
        assert f"| {name} |" in text
    assert "40.0%" in text and "| - |" in text  # missing cells are dashes
    write_report(metrics, tmp_path)
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluation_report_keys_are_stable(tiny_corpus, tiny_cache, tmp_path):
    """Evaluate students trained on the tiny cache: every model in metrics and the report."""
    from pipeline.students import parse_students
    from pipeline.training.loop import TrainConfig
    from stages import train_student

    params = tiny_params()
    students = parse_students(params)
    chosen = {k: students[k] for k in ("ce", "kd")}
    dirs = {k: tmp_path / "students" / k for k in chosen}
    train_student.run(chosen, section(params, "train", TrainConfig), tiny_corpus, tiny_cache,
                      dirs, tmp_path / "state.pt")  # fmt: skip
    cfg = section(params, "evaluate", evaluate.EvaluateConfig)
    teacher = from_dict(TeacherConfig, params["cache_teacher"]["teacher"], "teacher")
    checkpoints = {k: d / train_student.CHECKPOINT for k, d in dirs.items()}
    metrics = evaluate.run(cfg, teacher, tiny_corpus, tiny_cache, checkpoints, tmp_path / "eval")
    assert list(metrics["models"]) == ["teacher", "fbank", "ce", "kd"]
    common = {"kind", "parameters", "wer", "cer", "per", "probe_loss", "layer_weights", "rtf",
              "peak_memory_mb", "rtf_vs_teacher"}  # fmt: skip
    for name, row in metrics["models"].items():
        agreement = {"top1_agreement", "kl", "tckd", "nckd", "frames"}
        assert set(row) == common | (agreement if row["kind"] == "student" else set()), name
    assert metrics["models"]["fbank"]["parameters"] == 0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["models"].keys() == metrics["models"].keys()
    report = (tmp_path / "eval" / "report.md").read_text()
    assert all(f"| {name} |" in report for name in metrics["models"])
