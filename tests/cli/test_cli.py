"""The `pipeline` CLI end to end on a tiny corpus, through typer's CliRunner."""

import json

import numpy as np
import yaml
from conftest import ROOT, tiny_params, write_params
from typer.testing import CliRunner

from cli.main import app
from pipeline.training.live import read_curve, read_curves

runner = CliRunner()


def test_help_lists_the_stage_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = ("prepare", "cache-teacher", "train-student", "evaluate-teacher",
                "evaluate-baseline", "evaluate-student", "report", "export")  # fmt: skip
    for command in commands:
        assert command in result.output
    for command in commands:
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0 and "--params" in sub.output


def test_stages_run_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_params()
    params["students"] = {k: params["students"][k] for k in ("ce", "dkd_b4")}
    params["sweep"]["students"] = {"dkd_b8": {"losses.dkd.beta": 8.0}}
    params["evaluate"]["baselines"] = ["fbank"]
    params["report"]["compare"] = [["dkd_b4", "ce"], ["dkd_b8", "teacher"]]
    del params["students"]["ce"]["seeds"]  # ce: one model, trained with train.seed
    write_params(tmp_path / "params.yaml", params)
    for args in (
        ["prepare"],
        ["cache-teacher"],
        ["train-student", "ce"],
        ["train-student", "dkd_b4"],
        ["sweep", "--out", "sweeps/models", "--log", "sweeps/training"],
        ["evaluate-teacher"],
        ["evaluate-baseline", "fbank"],
        ["evaluate-student", "ce"],
        ["evaluate-student", "dkd_b4"],
        ["evaluate-student", "dkd_b8", "--checkpoint", "sweeps/models/dkd_b8/model.pt"],
        ["report"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    assert "test dkd_b4 vs ce: PER " in result.output and "(no interval: one replicate)" in (
        result.output)  # ce has one training seed here  # fmt: skip
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"teacher", "fbank", "ce", "dkd_b4", "dkd_b8"}
    assert set(metrics["comparisons"]) == {"dkd_b4 vs ce", "dkd_b8 vs teacher"}
    assert read_curves(tmp_path / "sweeps" / "training", "dkd_b8")  # the sweep's training log
    for name, seeds in (("ce", 1), ("dkd_b4", 2), ("dkd_b8", 1)):
        values = metrics["models"][name]["splits"]["test"]
        assert len(values["top1_agreement"]["seeds"]) == seeds
        assert 0.0 <= values["top1_agreement"]["mean"] <= 1.0 and values["kl"]["mean"] >= 0.0
    # the training log is dvclive's: the latest terms and the run's figures, and every point
    student = json.loads((tmp_path / "students" / "ce" / "metrics.json").read_text())
    assert {"ce", "loss", "parameters", "seconds"} <= set(student)
    assert student["step"] == 3
    curve = read_curve(tmp_path / "students" / "ce")
    assert [p["step"] for p in curve] == [2, 3] and curve[-1]["loss"] == student["loss"]
    seeded = json.loads((tmp_path / "students" / "dkd_b4" / "metrics.json").read_text())
    assert {"ce", "dkd", "tckd", "nckd", "loss", "parameters"} <= set(seeded["seed1"])

    # a model against another, in the workspace (across revisions: tests/project/test_dvc.py)
    result = runner.invoke(app, ["compare", "dkd_b4", "ce"])
    assert result.exit_code == 0, result.output
    assert "test PER: dkd_b4 - ce = " in result.output and "2 vs 1 replicates" in result.output
    result = runner.invoke(app, ["compare", "dkd_b4@", "ce"])
    assert result.exit_code == 1 and "expected MODEL or MODEL@REV" in result.output
    result = runner.invoke(
        app, ["export", "dkd_b4", "--seed", "1", "--format", "hf", "--quantize", ""]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "exports" / "dkd_b4" / "export.json").read_text())["seed"] == 1
    result = runner.invoke(
        app, ["export", "dkd_b4", "--seed", "5", "--format", "hf", "--quantize", ""]
    )
    assert result.exit_code == 1 and "no training seed 5 (it has [0, 1])" in result.output


def test_config_errors_exit_2_and_name_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_params()
    params["train"]["stepz"] = 3
    write_params(tmp_path / "params.yaml", params)
    result = runner.invoke(app, ["train-student", "ce"])
    assert result.exit_code == 2 and "unknown key train.stepz" in result.output
    result = runner.invoke(app, ["train-student", "nobody"])
    assert result.exit_code == 2


def test_missing_inputs_exit_1_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", tiny_params())
    result = runner.invoke(app, ["cache-teacher"])
    assert result.exit_code == 1 and "run `pipeline prepare` first" in result.output
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.jsonl").write_text("")
    result = runner.invoke(app, ["train-student", "ce"])
    assert result.exit_code == 1 and "no header.json" in result.output
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["train"]["steps"] == 3


def test_student_info_prints_parameter_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, ["student-info", "kd", "--params", str(ROOT / "configs" / "paper.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert "kd: 18,252,276 parameters" in result.output and "lstms 13.39M" in result.output


def test_too_short_audio_is_named_not_a_traceback(tmp_path, monkeypatch):
    import soundfile as sf

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", tiny_params())
    sf.write(tmp_path / "tiny.wav", np.zeros(200, dtype=np.float32), 16_000)
    (tmp_path / "data").mkdir()
    row = {"id": "tiny", "audio": str(tmp_path / "tiny.wav"), "samples": 200, "sample_rate": 16000,
           "transcript": "", "speaker": "", "split": "train"}  # fmt: skip
    (tmp_path / "data" / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    result = runner.invoke(app, ["cache-teacher"])
    assert result.exit_code == 1 and "tiny.wav: 200 samples at 16 kHz is too short" in result.output


def test_the_cpu_kernel_cache_is_bounded_unless_the_user_sets_it():
    import os
    import subprocess
    import sys

    show = "import pipeline.core, os; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    for given, expected in ((None, "32"), ("512", "512")):
        run_env = env if given is None else {**env, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": given}
        out = subprocess.run([sys.executable, "-c", show], cwd=ROOT, env=run_env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert out.stdout.strip() == expected
