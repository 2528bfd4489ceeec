"""The comparison statistics on synthetic data whose truth is known: intervals cover a null
difference at about the nominal rate, and a planted difference is found with its sign."""

import numpy as np
import pytest

from pipeline.evaluation.compare import ErrorCounts, estimate, replicate_errors, verdict


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


def _pair(rng, shift_a, shift_b, seeds=3):
    tokens, difficulty = _test_set(rng)
    ids = tuple(f"u{i}" for i in range(len(tokens)))
    a = ErrorCounts(ids, tokens, _model(rng, difficulty, tokens, shift_a, seeds))
    b = ErrorCounts(ids, tokens, _model(rng, difficulty, tokens, shift_b, seeds))
    return a, b


def test_intervals_cover_a_null_difference_at_about_the_nominal_rate():
    """Same model both sides (an A/A pair): over 300 fresh test sets and seed draws the 95%
    interval holds 0 in 90-99% of them, and when it does not the verdict is not 'not
    resolved' (the verdict follows the interval)."""
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(300):
        a, b = _pair(rng, 0.0, 0.0)
        result = estimate(a, b, draws=400, seed=int(rng.integers(1 << 30)))
        holds = result["low"] <= 0 <= result["high"]
        covered += holds
        assert (result["verdict"] == "not resolved") == holds
    assert 0.90 <= covered / 300 <= 0.99


def test_a_planted_difference_is_detected_with_its_sign():
    """A is 0.8 logits better than B on every utterance: the verdict says so in most draws and
    never says the opposite; swapping the sides swaps the verdict and the sign."""
    rng = np.random.default_rng(2)
    verdicts = []
    for _ in range(100):
        a, b = _pair(rng, -0.8, 0.0)
        forward, backward = estimate(a, b, draws=400), estimate(b, a, draws=400)
        assert forward["value"] < 0 and backward["value"] == pytest.approx(-forward["value"])
        assert {forward["verdict"], backward["verdict"]} in ({"better", "worse"},
                                                              {"not resolved"})  # fmt: skip
        verdicts.append(forward["verdict"])
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
    assert narrow["value"] == pytest.approx(wide["value"])
    assert wide["half_width"] > narrow["half_width"] > 0
    alone = estimate(ErrorCounts(ids, tokens, base[None]), other)
    assert alone["low"] is None and alone["verdict"] == "not resolved"
    single = estimate(spread)  # one model's rate: its mean with an interval
    assert single["low"] < single["value"] < single["high"] and "verdict" not in single


def test_runs_of_one_training_seed_are_one_replicate():
    runs = [{"train_seed": 0, "probe_seed": 0}, {"train_seed": 0, "probe_seed": 1},
            {"train_seed": 5, "probe_seed": 0}, {"train_seed": 5, "probe_seed": 1}]  # fmt: skip
    errors = [[1, 2], [3, 4], [10, 10], [20, 30]]
    assert replicate_errors(runs, errors).tolist() == [[2, 3], [15, 20]]
    teacher = [{"train_seed": None, "probe_seed": 0}, {"train_seed": None, "probe_seed": 1}]
    assert replicate_errors(teacher, [[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]


def test_other_test_sets_are_refused_and_verdicts_follow_the_interval():
    a = ErrorCounts(("x", "y"), np.array([3, 4]), np.ones((2, 2)))
    b = ErrorCounts(("x", "z"), np.array([3, 4]), np.ones((2, 2)))
    with pytest.raises(ValueError, match="same test set"):
        estimate(a, b)
    assert verdict(-0.03, -0.01) == "better" and verdict(0.01, 0.02) == "worse"
    assert verdict(-0.01, 0.01) == "not resolved" and verdict(None, None) == "not resolved"
