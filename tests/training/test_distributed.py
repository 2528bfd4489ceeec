"""Beyond one process: data-parallel students under torchrun (gloo on the CPU), resumed on
another number of ranks, and sweeps spread over dask workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PIPELINE, assert_same_weights, tiny_params, write_params

from pipeline.core.faults import FAULT
from pipeline.training.live import read_curves

pytestmark = pytest.mark.slow


def _close(a: Path, b: Path) -> None:
    """Data-parallel and single-process runs sum gradients in another order: float tolerance."""
    assert_same_weights(a, b, rtol=1e-4, atol=1e-5)


def _command(ranks: int, params: Path, manifest: Path, cache: Path, out: Path) -> list[str]:
    train = [PIPELINE, "train-student", "kd", "--params", str(params), "--manifest",
             str(manifest), "--cache", str(cache), "--out", str(out)]  # fmt: skip
    if ranks == 1:
        return train
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={ranks}", "--no-python", *train]  # fmt: skip


def _env() -> dict:
    return {**os.environ, "HUBERT_KD_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}


def _params(tmp_path: Path, **train) -> Path:
    params = tiny_params()
    params["train"].update(streams=2, threads=1, **train)
    params["students"]["kd"]["model"].update(lstm_hidden=32, dropout=0.1)
    return write_params(tmp_path / "params.yaml", params)


def test_two_ranks_give_one_process_weights(tiny_corpus, tiny_cache, tmp_path):
    """The same global batch (2 streams) on 1 process and on 2 gloo ranks: the same student."""
    params = _params(tmp_path, steps=6, checkpoint_every=0)
    for ranks in (1, 2):
        out = tmp_path / f"ranks{ranks}"
        done = subprocess.run(_command(ranks, params, tiny_corpus, tiny_cache, out),
                              env=_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    _close(tmp_path / "ranks1" / "model.pt", tmp_path / "ranks2" / "model.pt")
    curves = read_curves(tmp_path / "ranks2")  # rank 0 wrote the training log of every seed
    assert len(curves) == 2 and all(points[-1]["step"] == 6 for points in curves.values())


def test_a_refused_lock_stops_every_rank_at_once(tiny_corpus, tiny_cache, tmp_path):
    """Another run holds the checkpoint's lock: rank 0 is refused, and every rank exits with
    its one-line message at once, not after the collective timeout (set beyond this test's)."""
    from pipeline.core.locks import output_lock

    params = _params(tmp_path, steps=4, checkpoint_every=0, dist_timeout=3600)
    out = tmp_path / "busy"
    out.mkdir()
    with output_lock(out / "train_state.pt"):
        done = subprocess.run(_command(2, params, tiny_corpus, tiny_cache, out), env=_env(),
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.count("another run is writing it") == 2, done.stderr[-3000:]  # both ranks
    assert not (out / "model.pt").exists()


def test_a_killed_two_rank_run_resumes_on_one(tiny_corpus, tiny_cache, tmp_path):
    params = _params(tmp_path, steps=30, checkpoint_every=3, log_every=5)
    reference = tmp_path / "reference"
    done = subprocess.run(_command(1, params, tiny_corpus, tiny_cache, reference), env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "killed"
    env = {**_env(), FAULT: "checkpoint:6"}  # every rank kills itself after that checkpoint
    killed = subprocess.run(_command(2, params, tiny_corpus, tiny_cache, out), env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert not (out / "model.pt").exists(), sorted(p.name for p in out.iterdir())
    assert (out / "train_state.pt").exists(), sorted(p.name for p in out.iterdir())
    done = subprocess.run(_command(1, params, tiny_corpus, tiny_cache, out), env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr, done.stderr[-3000:]
    _close(reference / "model.pt", out / "model.pt")
    assert '"resumed_from_step": 6' in (out / "metrics.json").read_text()


def test_a_sweep_over_dask_workers_survives_dying_workers(
    tiny_corpus, tiny_cache, tmp_path, monkeypatch
):
    """Four students spread over two worker processes, each of which kills itself after its
    share's checkpoint of step 8: the nannies restart them, every share reruns, resuming from
    that checkpoint, and every student equals the local sweep's."""
    from distributed import LocalCluster
    from typer.testing import CliRunner

    from cli.main import app

    params = tiny_params()
    params["train"].update(steps=40, checkpoint_every=4, log_every=10, threads=1)
    write_params(tmp_path / "params.yaml", params)
    args = ["sweep", "dkd_b4", "--grid", "losses.dkd.beta=1,2,4,8", "--params",
            str(tmp_path / "params.yaml"), "--manifest", str(tiny_corpus), "--cache",
            str(tiny_cache)]  # fmt: skip
    local = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output

    out = tmp_path / "cluster"
    monkeypatch.setenv(FAULT, "checkpoint:8")  # the workers inherit it; this process trains none
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:  # fmt: skip
        result = CliRunner().invoke(
            app, [*args, "--out", str(out), "--scheduler", cluster.scheduler_address]
        )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "local").glob("dkd_b4-*"))
    assert len(names) == 4
    for name in names:
        _close(tmp_path / "local" / name / "model.pt", out / name / "model.pt")
    logs = sorted(out.glob("training-*"))  # each share's training log
    assert len(logs) == 2
    for log in logs:
        assert json.loads((log / "metrics.json").read_text())["resumed_from_step"] == 8, log
