"""Stage two: sweeps equal separate runs, and a killed run resumes to the same weights."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PIPELINE, assert_same_weights, tiny_params, write_params
from typer.testing import CliRunner

from cli.main import app
from pipeline.core.config import section
from pipeline.core.faults import FAULT
from pipeline.students import grid_students, parse_students
from pipeline.training.config import TrainConfig
from pipeline.training.live import read_curve, read_curves
from stages import train_student


def _assert_same(a: Path, b: Path, seed: int | None = None) -> None:
    assert_same_weights(a, b, rtol=0, atol=1e-6, seed=seed)


def test_grid_names_and_values():
    base = {"arch": "lstm", "losses": {"dkd": {"beta": 1.0, "tau": 1.0}}}
    grid = grid_students("d", base, {"losses.dkd.beta": [1, 8], "losses.dkd.tau": [2]})
    assert list(grid) == ["d-beta1-tau2", "d-beta8-tau2"]
    assert grid["d-beta8-tau2"]["losses"]["dkd"] == {"beta": 8, "tau": 2}
    assert base["losses"]["dkd"]["beta"] == 1.0


def test_sweep_students_equal_separately_trained_ones(tiny_corpus, tiny_cache, tmp_path):
    """Students trained together, each with its training seeds, get the weights and curves
    they get alone: ``kd`` with seeds [0, 1] beside ``dkd_b4`` (one seed, ``train.seed``)
    equals ``kd`` trained alone with seed 1 only, and ``dkd_b4`` alone."""
    params = tiny_params()
    params["train"].update(steps=4, checkpoint_every=0)
    params["students"]["kd"]["model"]["dropout"] = 0.3  # dropout draws must match too
    params["students"]["kd"]["model"]["lstm_layers"] = 2
    params["students"]["kd"]["seeds"] = [0, 1]
    del params["students"]["dkd_b4"]["seeds"]
    train_cfg = section(params, "train", TrainConfig)
    students = parse_students(params)
    chosen = {n: students[n] for n in ("kd", "dkd_b4")}
    alone = {"kd": dataclasses.replace(students["kd"], seeds=(1,)), "dkd_b4": students["dkd_b4"]}
    for name, cfg in alone.items():
        train_student.run(
            {name: cfg},
            train_cfg,
            tiny_corpus,
            tiny_cache,
            {name: tmp_path / "alone" / name},
            tmp_path / "s",
            tmp_path / "alone" / name,
        )
    dirs = {n: tmp_path / "sweep" / n for n in chosen}
    log = tmp_path / "sweep" / "training"
    train_student.run(
        chosen, train_cfg, tiny_corpus, tiny_cache, dirs, tmp_path / "sweep" / "state.pt", log,
        sweep=True,
    )  # fmt: skip
    for name, seed, label in (("kd", 1, "kd/seed1"), ("dkd_b4", 0, "dkd_b4")):
        _assert_same(tmp_path / "alone" / name / "model.pt", dirs[name] / "model.pt", seed)
        assert read_curve(log, label) == read_curve(tmp_path / "alone" / name)
    logged = json.loads((log / "metrics.json").read_text())
    assert set(logged["kd"]) == {"seed0", "seed1"} and "loss" in logged["kd"]["seed1"]
    import torch

    saved = torch.load(dirs["kd"] / "model.pt", weights_only=True)
    assert saved["seeds"] == [0, 1]
    first, second = saved["state_dicts"]
    assert any(not torch.equal(first[k], second[k]) for k in first)  # two models, not one


def test_sweep_from_the_cli(tiny_corpus, tiny_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_params()
    params["train"]["steps"] = 2
    write_params(tmp_path / "params.yaml", params)
    args = ["sweep", "dkd_b4", "--grid", "losses.dkd.beta=1,8", "--grid", "losses.dkd.tau=1,2",
            "--manifest", str(tiny_corpus), "--cache", str(tiny_cache)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    made = sorted(p.name for p in (tmp_path / "sweeps").iterdir())
    names = ["dkd_b4-beta1-tau1", "dkd_b4-beta1-tau2", "dkd_b4-beta8-tau1", "dkd_b4-beta8-tau2"]
    assert made == [*names, "training"]  # the students' checkpoints, the sweep's training log
    logged = json.loads((tmp_path / "sweeps" / "training" / "metrics.json").read_text())
    assert set(logged) == {*names, "step", "steps", "seconds", "frames_per_second",
                           "resumed_from_step"}  # fmt: skip
    for name in names:  # each grid point keeps dkd_b4's training seeds
        curves = read_curves(tmp_path / "sweeps" / "training", name)
        assert set(curves) == {f"{name}/seed0", f"{name}/seed1"} and all(curves.values())
    result = CliRunner().invoke(app, [*args[:2], "--grid", "losses.dkd.betta=1", *args[6:]])
    assert result.exit_code == 2 and "unknown key" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_killed_training_resumes_to_the_same_weights(tiny_corpus, tiny_cache, tmp_path, processes):
    """Killed at a checkpoint (in one process; or every process of a run whose seeds are
    shared out, which then fails in one line), training resumes to the weights and curves of
    an uninterrupted run."""
    params = tiny_params()
    params["train"].update(steps=40, checkpoint_every=3, log_every=5, processes=processes)
    params["train"]["average"] = {"kind": "swa", "start": 0.15}  # checkpointed with the run
    params["students"]["kd"]["model"].update(
        conv_dim=32, lstm_hidden=64, lstm_layers=2, dropout=0.2
    )
    write_params(tmp_path / "params.yaml", params)
    common = [
        "--params",
        str(tmp_path / "params.yaml"),
        "--manifest",
        str(tiny_corpus),
        "--cache",
        str(tiny_cache),
    ]
    reference = CliRunner().invoke(
        app, ["train-student", "kd", *common, "--out", str(tmp_path / "ref")]
    )
    assert reference.exit_code == 0, reference.output

    out = tmp_path / "killed"
    cmd = [PIPELINE, "train-student", "kd", *common, "--out", str(out)]
    env = {**os.environ, "HUBERT_KD_NO_PROGRESS": "1", FAULT: "checkpoint:9"}
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if processes == 1:
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert (out / train_student.STATE).exists()
    else:  # each share's process killed itself; the run says so in one line
        assert killed.returncode == 1, killed.stderr[-2000:]
        assert "a training process ended before its share" in killed.stderr
        assert "Traceback" not in killed.stderr
        shares = out / f".{Path(train_student.STATE).stem}.work"  # the first process killed
        assert list(shares.glob(f"*/{train_student.STATE}"))  # ends the others where they are
    assert not (out / "model.pt").exists()
    resumed = CliRunner().invoke(app, ["train-student", "kd", *common, "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    _assert_same(tmp_path / "ref" / "model.pt", out / "model.pt")
    metrics = json.loads((out / "metrics.json").read_text())
    resumed = metrics["resumed_from_step"]  # shared out: the earliest share's step
    assert resumed == 9 if processes == 1 else resumed in (0, 3, 6, 9)
    curves = read_curves(out)
    assert set(curves) == {"seed0", "seed1"}  # the tiny params' kd has two training seeds
    assert curves == read_curves(tmp_path / "ref")  # no point logged twice or lost


def test_a_training_seed_fixes_the_batch_order_every_student_of_it_shares(tiny_corpus,
                                                                         tiny_cache):  # fmt: skip
    """Each training seed streams its own batch order, the same for every student trained with
    it (whatever else it trains beside): seed 0's batches are seed 0's, not seed 1's."""
    from pipeline.corpus.manifest import read_manifest
    from pipeline.training.students import cache_streams

    cfg = section(tiny_params(), "train", TrainConfig)
    utts = read_manifest(tiny_corpus, split="train")

    def order(seed):
        stream = cache_streams(tiny_cache, utts, tiny_corpus, cfg, seed)
        return [tuple(batch.ids) for _ in range(6) for _, batch in next(stream)]

    assert order(0) == order(0) and order(1) == order(1)
    assert order(0) != order(1)


def test_seeds_shared_out_to_processes_train_as_one_process_does(tiny_corpus, tiny_cache,
                                                                 tmp_path):  # fmt: skip
    """``kd``'s two seeds trained in two processes of one thread each give what one process of
    one thread gives: the checkpoint (its seeds in their order, the same weights), the curves
    and the figures; the shares' work folder is gone."""
    params = tiny_params()
    params["train"].update(steps=4, checkpoint_every=0, threads=1, processes=1)
    kd = {"kd": parse_students(params)["kd"]}
    assert kd["kd"].seeds == (0, 1)
    alone = train_student.run(kd, section(params, "train", TrainConfig), tiny_corpus, tiny_cache,
                              {"kd": tmp_path / "one"}, tmp_path / "one" / "s.pt",
                              tmp_path / "one")  # fmt: skip
    params["train"].update(threads=2, processes=2)
    shared = train_student.run(kd, section(params, "train", TrainConfig), tiny_corpus, tiny_cache,
                               {"kd": tmp_path / "two"}, tmp_path / "two" / "s.pt",
                               tmp_path / "two")  # fmt: skip
    _assert_same(tmp_path / "one" / "model.pt", tmp_path / "two" / "model.pt")
    assert read_curves(tmp_path / "one") == read_curves(tmp_path / "two")
    assert set(read_curves(tmp_path / "two")) == {"seed0", "seed1"}
    assert shared["kd"]["final"] == alone["kd"]["final"] and shared["kd"]["seeds"] == [0, 1]
    logged = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert {"seed0", "seed1", "seconds", "frames_per_second"} <= set(logged)
    assert logged["seed1"]["parameters"] == alone["kd"]["parameters"]
    assert not (tmp_path / "two" / ".s.work").exists()


def test_weight_averages_are_torchs_over_the_last_part_of_training():
    """``swa`` keeps the mean of the weights after each update from ``start`` on, ``ema`` an
    exponential average from there; ``none`` keeps the last weights."""
    import torch

    from pipeline.core.config import Choice
    from pipeline.training.averaging import AVERAGES, EMAConfig, SWAConfig

    def run(kind, cfg):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        average = Choice(kind, cfg, AVERAGES).build().attach(model, steps=4)
        seen = []
        for step in range(4):
            with torch.no_grad():
                model.weight.add_(float(step + 1))
            seen.append(model.weight.detach().clone())
            if average is not None:
                average.update(model, step)
        return seen, (model if average is None else average.model)

    seen, kept = run("swa", SWAConfig(start=0.5))
    torch.testing.assert_close(kept.weight, (seen[2] + seen[3]) / 2)  # steps 2 and 3
    seen, kept = run("ema", EMAConfig(decay=0.9, start=0.5))
    torch.testing.assert_close(kept.weight, 0.9 * seen[2] + 0.1 * seen[3])
    seen, kept = run("none", AVERAGES["none"].config_type())
    torch.testing.assert_close(kept.weight, seen[3])


def test_training_curves_list_seeds_by_number(tmp_path):
    from pipeline.training.live import PLOTS

    for seed in (10, 2, 1):
        folder = tmp_path / PLOTS / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "loss.tsv").write_text("step\tloss\n1\t0.5\n")
    assert list(read_curves(tmp_path)) == ["seed1", "seed2", "seed10"]


def test_the_gpu_benchmark_runs_on_the_cpu_at_toy_sizes():
    """bench/gpu.py, which fills issue 15's table on a GPU, runs end to end here."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).parents[2] / "bench" / "gpu.py"), "--small",
         "--utterances", "4", "--seconds", "2", "--steps", "2"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for row in ("cache-teacher, logits only", "train dkd_b4, frontend: cached", "sweep of 4"):
        assert row in result.stdout


@pytest.mark.slow
def test_a_resume_survives_operational_changes_and_refuses_real_ones(
    tiny_corpus, tiny_cache, tmp_path
):
    """Threads, logging and checkpoint cadence may change across a resume (another node), and
    loader workers between 0 and 1 (the same batch order); a change of what the weights depend
    on (a loss setting, a worker count that deals the blocks otherwise, other train rows in the
    manifest) is refused, naming the key, and the checkpoint stays; --restart starts afresh."""
    params = tiny_params()
    params["train"].update(steps=12, checkpoint_every=4, log_every=2)
    path = write_params(tmp_path / "params.yaml", params)
    common = ["--params", str(path), "--manifest", str(tiny_corpus), "--cache", str(tiny_cache)]
    reference = CliRunner().invoke(
        app, ["train-student", "kd", *common, "--out", str(tmp_path / "ref")]
    )
    assert reference.exit_code == 0, reference.output
    out = tmp_path / "kd"
    env = {**os.environ, "HUBERT_KD_NO_PROGRESS": "1", FAULT: "checkpoint:4"}
    killed = subprocess.run([PIPELINE, "train-student", "kd", *common, "--out", str(out)],
                            env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = (out / train_student.STATE).read_bytes()

    changed = tiny_params()
    changed["train"].update(steps=12, checkpoint_every=4, log_every=2, lr=0.001)
    write_params(path, changed)
    refused = CliRunner().invoke(app, ["train-student", "kd", *common, "--out", str(out)])
    assert refused.exit_code == 2 and "train.lr: 0.002 -> 0.001" in refused.output
    assert "--restart" in refused.output and (out / train_student.STATE).read_bytes() == state
    workers = tiny_params()
    workers["train"].update(steps=12, checkpoint_every=4, log_every=2, loader_workers=2)
    write_params(path, workers)
    refused = CliRunner().invoke(app, ["train-student", "kd", *common, "--out", str(out)])
    assert refused.exit_code == 2 and "train.loader_workers: 1 -> 2" in refused.output
    write_params(path, params)
    rows = tiny_corpus.read_text().splitlines()
    dropped = next(json.loads(r)["id"] for r in rows if json.loads(r)["split"] == "train")
    fewer = tiny_corpus.parent / "manifest-fewer.jsonl"  # beside it: its audio paths hold
    fewer.write_text("\n".join(r for r in rows if json.loads(r)["id"] != dropped) + "\n")
    other = ["--params", str(path), "--manifest", str(fewer), "--cache", str(tiny_cache)]
    refused = CliRunner().invoke(app, ["train-student", "kd", *other, "--out", str(out)])
    fewer.unlink()
    assert refused.exit_code == 2 and "train_utterances:" in refused.output

    operational = tiny_params()
    operational["train"].update(steps=12, checkpoint_every=5, log_every=3, threads=1,
                                loader_workers=1)  # fmt: skip
    write_params(path, operational)
    resumed = CliRunner().invoke(app, ["train-student", "kd", *common, "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 4
    assert_same_weights(tmp_path / "ref" / "model.pt", out / "model.pt", rtol=1e-4, atol=1e-5)

    (out / train_student.STATE).write_bytes(state)  # the killed run's checkpoint again
    write_params(path, changed)
    again = CliRunner().invoke(
        app, ["train-student", "kd", *common, "--out", str(out), "--restart"]
    )
    assert again.exit_code == 0, again.output
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 0
