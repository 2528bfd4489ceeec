"""Beyond one process: data-parallel students under torchrun (gloo on the CPU), resumed on
another number of ranks, and sweeps spread over dask workers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import PIPELINE, assert_same_weights, tiny_params, write_params

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
    curve = (tmp_path / "ranks2" / "curve.json").read_text()
    assert '"step": 6' in curve  # rank 0 wrote the curve


def test_a_killed_two_rank_run_resumes_on_one(tiny_corpus, tiny_cache, tmp_path):
    params = _params(tmp_path, steps=30, checkpoint_every=3, log_every=5)
    reference = tmp_path / "reference"
    done = subprocess.run(_command(1, params, tiny_corpus, tiny_cache, reference), env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(_command(2, params, tiny_corpus, tiny_cache, out), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not (out / "train_state.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "ended before it was killed"
        time.sleep(0.05)
    time.sleep(0.5)
    ranks = psutil.Process(proc.pid).children(recursive=True)  # in sessions of their own
    for victim in [proc.pid, *(r.pid for r in ranks)]:
        os.kill(victim, signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(ranks, timeout=30)
    assert not (out / "model.pt").exists(), sorted(p.name for p in out.iterdir())
    assert (out / "train_state.pt").exists(), sorted(p.name for p in out.iterdir())
    done = subprocess.run(_command(1, params, tiny_corpus, tiny_cache, out), env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr, done.stderr[-3000:]
    _close(reference / "model.pt", out / "model.pt")
    assert '"resumed_from_step": 0' not in (out / "metrics.json").read_text()


def test_a_sweep_over_dask_workers_survives_a_dying_worker(tiny_corpus, tiny_cache, tmp_path):
    """Four students spread over two worker processes, one of which is killed mid-run: its
    share reruns, resuming from its checkpoint, and every student equals the local sweep's."""
    import threading

    from distributed import Client, LocalCluster
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
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        pids = client.run(os.getpid)

        def kill_one() -> None:
            """Kill the worker running a share that has checkpointed (not just any worker: the
            other one may not have reached its first checkpoint yet)."""
            deadline = time.time() + 300
            while time.time() < deadline:
                for state in out.glob("sweep_state-*.pt"):
                    key = "sweep-share-" + state.stem.rsplit("-", 1)[1]
                    running = [w for w, keys in client.processing().items() if key in keys]
                    if running:
                        os.kill(pids[running[0]], signal.SIGKILL)
                        return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_one)
        killer.start()
        result = CliRunner().invoke(
            app, [*args, "--out", str(out), "--scheduler", cluster.scheduler_address]
        )
        killer.join()
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "local").iterdir() if p.is_dir())
    assert len(names) == 4
    for name in names:
        _close(tmp_path / "local" / name / "model.pt", out / name / "model.pt")
    resumed = [
        n for n in names if '"resumed_from_step": 0' not in (out / n / "metrics.json").read_text()
    ]
    assert resumed, "the killed worker's share was not resumed from its checkpoint"
