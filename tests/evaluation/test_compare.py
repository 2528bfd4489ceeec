"""The comparison statistics on synthetic data whose truth is known: intervals cover a null
difference at about the nominal rate, and a planted difference is found with its sign; and
`pipeline compare` refuses, in one line, what it cannot compare."""

import json
import os
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from pipeline.evaluation.compare import (
    ONE_POINT,
    PAIRED,
    UNPAIRED,
    ErrorCounts,
    design,
    estimate,
    replicate_errors,
    replicate_seeds,
    verdict,
)
from pipeline.evaluation.readout import needed_text
from pipeline.evaluation.variance import Spread, interaction, seeds_needed


def _model(rng, difficulty, tokens, shift, seeds, seed_sd=0.15, noise_sd=0.3):
    """Errors of ``seeds`` trainings of a model ``shift`` logits from the utterances'
    difficulty: each training draws its own offset (seed variance) and its own per-utterance
    noise (a seed x utterance interaction), then binomial errors."""
    logits = np.log(difficulty / (1 - difficulty)) + shift
    rows = []
    for _ in range(seeds):
        p = 1 / (
            1 + np.exp(-(logits + rng.normal(0, seed_sd) + rng.normal(0, noise_sd, len(tokens))))
        )
        rows.append(rng.binomial(tokens, p))
    return np.stack(rows).astype(float)


def _test_set(rng, utterances=60):
    """A fresh sample of test utterances: their token counts and difficulties."""
    return 1 + rng.poisson(18, utterances), rng.beta(2, 16, utterances)


def _pair(rng, shift_a, shift_b, seeds=(3, 3), seed_sd=0.15, noise_sd=0.3):
    tokens, difficulty = _test_set(rng)
    ids = tuple(f"u{i}" for i in range(len(tokens)))
    a = ErrorCounts(ids, tokens, _model(rng, difficulty, tokens, shift_a, seeds[0], seed_sd,
                                        noise_sd))  # fmt: skip
    b = ErrorCounts(ids, tokens, _model(rng, difficulty, tokens, shift_b, seeds[1], seed_sd,
                                        noise_sd))  # fmt: skip
    return a, b


@pytest.mark.parametrize(
    "seeds, seed_sd, noise_sd",
    [
        ((3, 3), 0.15, 0.3),  # seeds and which utterances each gets wrong, both
        ((3, 3), 0.02, 1.0),  # almost only which utterances (the interaction)
        ((3, 3), 0.3, 0.1),  # almost only the seeds' offsets
        ((3, 2), 0.15, 0.3),  # unbalanced
        ((2, 2), 0.15, 0.3),  # two seeds a side: one degree of freedom each
    ],
)
def test_intervals_cover_a_null_difference_at_about_the_nominal_rate(seeds, seed_sd, noise_sd):
    """Same model both sides (an A/A pair): over 300 fresh test sets and seed draws the 95%
    interval holds 0 in 90-99% of them, whichever source of variance dominates, and when it
    does not the verdict is not 'not resolved' (the verdict follows the interval)."""
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(300):
        a, b = _pair(rng, 0.0, 0.0, seeds, seed_sd, noise_sd)
        result = estimate(a, b, draws=400, seed=int(rng.integers(1 << 30)))
        assert result.design == UNPAIRED  # no seeds or pairing given: unpaired
        holds = result.low <= 0 <= result.high
        covered += holds
        assert (result.verdict == "not resolved") == holds
    assert 0.90 <= covered / 300 <= 0.99


def test_a_planted_difference_is_detected_with_its_sign():
    """A is 0.8 logits better than B on every utterance: the verdict says so in most draws and
    never says the opposite; swapping the sides swaps the verdict and the sign."""
    rng = np.random.default_rng(2)
    verdicts = []
    for _ in range(100):
        a, b = _pair(rng, -0.8, 0.0)
        forward, backward = estimate(a, b, draws=400), estimate(b, a, draws=400)
        assert forward.value < 0 and backward.value == pytest.approx(-forward.value)
        assert {forward.verdict, backward.verdict} in ({"better", "worse"},
                                                        {"not resolved"})  # fmt: skip
        verdicts.append(forward.verdict)
    assert "worse" not in verdicts and verdicts.count("better") >= 80


def test_seed_variance_widens_the_interval_and_one_seed_gives_none():
    """The same per-utterance mean errors, spread over seeds or not: the interval with a seed
    spread is wider; a side with one replicate has no seed variance, so no interval."""
    rng = np.random.default_rng(3)
    tokens = 1 + rng.poisson(18, 80)
    ids = tuple(map(str, range(80)))
    base = rng.binomial(tokens, 0.1).astype(float)
    steady = ErrorCounts(ids, tokens, np.stack([base] * 3))
    spread = ErrorCounts(ids, tokens, np.stack([base * 0.8, base, base * 1.2]))
    other = ErrorCounts(ids, tokens, np.stack([base * 1.05] * 3))
    narrow, wide = estimate(steady, other), estimate(spread, other)
    assert narrow.value == pytest.approx(wide.value)
    assert wide.half_width > narrow.half_width > 0
    alone = estimate(ErrorCounts(ids, tokens, base[None]), other)
    assert alone.low is None and alone.verdict == "not resolved" and alone.seeds_needed is None
    same = estimate(steady, ErrorCounts(ids, tokens, np.stack([base] * 3)))
    assert same.value == 0 and same.low is None  # nothing varies: no interval, no verdict
    assert same.verdict == "not resolved"
    single = estimate(spread)  # one model's rate: its mean with an interval
    assert single.low < single.value < single.high and single.verdict is None


def test_the_interaction_is_counted_once():
    """Replicates that differ only in which utterances they get wrong (no offsets, the same
    utterance means): the interaction estimate is the rate variance this causes (each of 200
    utterances +-1 error of 4,000 tokens: 200 / 4000^2), and the bootstrap's variance less it
    is about 0: the utterances add nothing the replicates' spread does not hold already."""
    rng = np.random.default_rng(4)
    tokens = np.full(200, 20)
    flips = rng.binomial(1, 0.5, size=(40, 200)) * 2 - 1  # +-1 error, independent
    errors = 4.0 + flips  # every utterance's mean is 4 errors
    counts = ErrorCounts(tuple(map(str, range(200))), tokens, errors)
    assert interaction(counts) == pytest.approx(200 / 4000**2, rel=0.1)
    result = estimate(counts)
    assert result.var_utterances < 0.2 * interaction(counts) / len(errors)


def test_runs_of_one_training_seed_are_one_replicate():
    runs = [{"train_seed": 0, "probe_seed": 0}, {"train_seed": 0, "probe_seed": 1},
            {"train_seed": 5, "probe_seed": 0}, {"train_seed": 5, "probe_seed": 1}]  # fmt: skip
    errors = [[1, 2], [3, 4], [10, 10], [20, 30]]
    assert replicate_errors(runs, errors).tolist() == [[2, 3], [15, 20]]
    teacher = [{"train_seed": None, "probe_seed": 0}, {"train_seed": None, "probe_seed": 1}]
    assert replicate_errors(teacher, [[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    assert replicate_seeds(runs) == (0, 5) and replicate_seeds(teacher) == (None, None)


def test_other_test_sets_are_refused_and_verdicts_follow_the_interval():
    a = ErrorCounts(("x", "y"), np.array([3, 4]), np.ones((2, 2)))
    b = ErrorCounts(("x", "z"), np.array([3, 4]), np.ones((2, 2)))
    with pytest.raises(ValueError, match="same test set"):
        estimate(a, b)
    assert verdict(-0.03, -0.01) == "better" and verdict(0.01, 0.02) == "worse"
    assert verdict(-0.01, 0.01) == "not resolved" and verdict(None, None) == "not resolved"


def _correlated_pair(rng, seeds, shift_b=0.0, shared_sd=0.3, own_sd=0.1, order=None):
    """Two students trained with the same ``seeds``: seed k fixes an offset and a pattern of
    which utterances go wrong that both share (the same initial weights and batches), and
    each adds a little of its own, so same-seed replicates correlate strongly."""
    tokens, difficulty = _test_set(rng)
    ids = tuple(f"u{i}" for i in range(len(tokens)))
    base = np.log(difficulty / (1 - difficulty))
    shared = [rng.normal(0, 0.15) + rng.normal(0, shared_sd, len(tokens)) for _ in seeds]

    def model(shift):
        rows = []
        for common in shared:
            logits = base + shift + common + rng.normal(0, own_sd, len(tokens))
            rows.append(rng.binomial(tokens, 1 / (1 + np.exp(-logits))))
        return np.stack(rows).astype(float)

    a = ErrorCounts(ids, tokens, model(0.0), tuple(seeds), "lstm-abc")
    b_errors, b_seeds = model(shift_b), tuple(seeds)
    if order is not None:  # B's replicates listed in another order: paired by seed, not row
        b_errors, b_seeds = b_errors[order], tuple(b_seeds[i] for i in order)
    return a, ErrorCounts(ids, tokens, b_errors, b_seeds, "lstm-abc")


def test_paired_intervals_cover_a_null_difference_with_correlated_replicates():
    """Two students equal in truth whose same-seed replicates share most of their variation
    (initial weights and batch order): over 400 fresh test sets and seed draws, the paired 95%
    interval holds 0 in 93-97% of them."""
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(400):
        a, b = _correlated_pair(rng, seeds=range(4))
        result = estimate(a, b, draws=400, seed=int(rng.integers(1 << 30)))
        assert result.design == PAIRED and result.replicates == [4, 4]
        covered += result.low <= 0 <= result.high
    assert 0.93 <= covered / 400 <= 0.97


def test_pairing_by_seed_narrows_the_interval_and_finds_a_planted_difference():
    """With correlated replicates, pairing by seed gives a narrower interval than treating the
    sides as independent, finds a planted difference with its sign in most draws and never
    the opposite; B's rows listed in another order are matched by seed, not by row."""
    rng = np.random.default_rng(6)
    verdicts, ratios = [], []
    for _ in range(60):
        a, b = _correlated_pair(rng, seeds=range(6), shift_b=0.25, order=[2, 0, 5, 3, 1, 4])
        paired = estimate(a, b, draws=400)
        unpaired = estimate(a, ErrorCounts(b.ids, b.tokens, b.errors), draws=400)
        assert unpaired.design == UNPAIRED and paired.value == pytest.approx(unpaired.value)
        ratios.append(paired.half_width / unpaired.half_width)
        verdicts.append(paired.verdict)
    assert np.median(ratios) < 0.75 and np.mean(np.array(ratios) < 1) >= 0.8
    assert "worse" not in verdicts and verdicts.count("better") >= 50


def test_the_design_is_paired_only_for_the_same_pairing_and_seeds():
    ids, tokens, errors = ("x", "y"), np.array([3, 4]), np.ones((3, 2))

    def counts(seeds=(0, 1, 2), pairing="p"):
        return ErrorCounts(ids, tokens, errors[: len(seeds)], seeds, pairing)

    assert design(counts(), counts(seeds=(2, 0, 1))) == PAIRED
    assert design(counts(), counts(pairing="q")) == UNPAIRED  # another architecture or order
    assert design(counts(), counts(seeds=(0, 1, 3))) == UNPAIRED  # other seeds
    assert design(counts(pairing=""), counts(pairing="")) == UNPAIRED  # not known to pair
    assert design(counts(seeds=(0,)), counts(seeds=(0,))) == UNPAIRED  # one seed: no spread
    assert design(counts(seeds=(None, None)), counts(seeds=(None, None))) == UNPAIRED


def test_seeds_needed_is_the_fewest_that_resolve():
    """The seeds a side that a spread needs: the fewest whose half-width is below the target;
    none when the utterances' part alone is as wide; an unresolved comparison carries both
    figures, a resolved one none."""
    spread = Spread(sides=((0.01**2, 3), (0.012**2, 3)), utterances=0.001**2, n_utterances=400)
    for size in (0.02, ONE_POINT, 0.004):
        n = seeds_needed(spread, size, 0.95)
        assert spread.half_width(0.95, n)[0] < size <= spread.half_width(0.95, n - 1)[0]
    assert seeds_needed(spread, 0.0015, 0.95) is None  # 1.96 x 0.1 points is already 0.2
    assert seeds_needed(spread, 0.0, 0.95) is None
    rng = np.random.default_rng(7)
    a, b = _correlated_pair(rng, seeds=range(3), shift_b=0.02)
    result = estimate(a, b, draws=400)
    assert result.verdict == "not resolved"
    assert set(result.seeds_needed) == {"its_size", "one_point"}
    a, b = _correlated_pair(rng, seeds=range(6), shift_b=1.0)
    assert estimate(a, b, draws=400).seeds_needed is None  # resolved: nothing needed


def test_what_it_would_take_reads_as_a_sentence():
    """The report's and compare's words for seeds_needed, with a figure missing where no number
    of seeds is enough (the test utterances alone are wider than the difference)."""

    def text(its, one):
        return needed_text({"seeds_needed": {"its_size": its, "one_point": one}})

    assert text(1200, 5) == "1,200 seeds a side for its size, 5 for 1 point"
    assert text(None, 6) == ("more test utterances for its size (no number of seeds is enough), "
                             "6 seeds a side for 1 point")  # fmt: skip
    assert text(None, None).endswith(", more test utterances for 1 point")
    assert needed_text({"seeds_needed": None}) == needed_text(None) == ""


# --- `pipeline compare` refuses what it cannot compare --------------------------------------


def _evaluation(name: str, shift: float, splits=("test",)) -> dict:
    """A model's evaluation json as `evaluate-*` writes it: three training seeds' per-utterance
    PER errors on 30 utterances of each split."""
    rng = np.random.default_rng(int(shift * 100))
    tokens = [10] * 30
    doc = {"name": name, "runs": [{"train_seed": s, "probe_seed": 0} for s in range(3)],
           "splits": {}, "utterances": {}}  # fmt: skip
    for split in splits:
        errors = rng.binomial(10, 0.2 + shift, size=(3, 30)).tolist()
        doc["splits"][split] = {"per": {"mean": float(np.mean(errors)) / 10}}
        ids = [f"u{i}" for i in range(30)]
        doc["utterances"][split] = {
            "ids": ids,
            "tokens": {"per": tokens},
            "errors": {"per": errors},
        }
    return doc


@pytest.fixture
def evaluations(tmp_path, monkeypatch):
    """A git repository holding the evaluations of ``a``, ``b`` (on the test split) and ``c``
    (on dev), committed, as the working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    models = tmp_path / "eval" / "models"
    models.mkdir(parents=True)
    for name, shift in (("a", 0.0), ("b", 0.1)):
        (models / f"{name}.json").write_text(json.dumps(_evaluation(name, shift)))
    (models / "c.json").write_text(json.dumps(_evaluation("c", 0.05, splits=("dev",))))
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": os.environ["PATH"]}  # fmt: skip
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "eval"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True)
    return models


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "a"], "a and a are the same evaluation (model 'a', the same results)"),
        (["a@HEAD", "a"], "a@HEAD and a are the same evaluation"),  # the workspace is HEAD's
        (["a", "b", "--split", "nosuch"], "--split nosuch: a was not scored on it (scored: test)"),
        (["a", "c", "--split", "test"], "--split test: c was not scored on it (scored: dev)"),
        (["a", "c"], "a and c were scored on no split in common"),
    ],
)
def test_compare_refuses_what_it_cannot_compare_in_one_line(evaluations, args, message):
    result = CliRunner().invoke(app, ["compare", *args])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"config error: {message}"), result.output


def test_compare_reads_one_model_at_two_revisions(evaluations):
    """The same model at HEAD and re-evaluated in the workspace is a comparison."""
    (evaluations / "a.json").write_text(json.dumps(_evaluation("a", 0.2)))
    result = CliRunner().invoke(app, ["compare", "a@HEAD", "a"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("test PER: a@HEAD - a = -"), result.output
