"""`dvc repro` end to end in a temp git repo, and the no-teacher-rerun property of sweeps."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, tiny_params, write_params

pytestmark = pytest.mark.slow


def _run(cmd, repo, env):
    result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _ran(output):
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("pipeline", "stages", "storage", "cli"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "assets", repo / "assets")  # a cache_teacher dependency
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = tiny_params()
    params["students"] = {k: params["students"][k] for k in ("ce", "kd", "dkd_b4")}
    write_params(repo / "params.yaml", params)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
        "HUBERT_KD_NO_PROGRESS": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }  # fmt: skip
    _run(["git", "init", "-q"], repo, env)
    _run(["dvc", "init", "-q"], repo, env)
    (repo / ".gitignore").write_text("__pycache__/\n")
    return repo, env


def test_repro_then_loss_change_reruns_only_students(repo):
    repo, env = repo
    first = _run(["dvc", "repro"], repo, env)
    assert _ran(first) == {
        "prepare",
        "cache_teacher",
        "train@ce",
        "train@kd",
        "train@dkd_b4",
        "evaluate",
    }
    metrics = yaml.safe_load((repo / "eval" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"teacher", "fbank", "ce", "kd", "dkd_b4"}
    assert (repo / "eval" / "report.md").is_file() and (repo / "eval" / "report.png").is_file()
    header_mtime = (repo / "cache" / "header.json").stat().st_mtime_ns

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["students"]["kd"]["losses"]["kd"]["tau"] = 2.0
    write_params(repo / "params.yaml", params)
    second = _run(["dvc", "repro"], repo, env)
    assert _ran(second) == {"train@kd", "evaluate"}
    assert "Stage 'cache_teacher' didn't change" in second
    assert (repo / "cache" / "header.json").stat().st_mtime_ns == header_mtime

    # A sweep point with `dvc exp run -S` (needs a commit) also leaves the teacher alone.
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "baseline"], repo, env)
    third = _run(["dvc", "exp", "run", "-S", "students.dkd_b4.losses.dkd.beta=8"], repo, env)
    assert _ran(third) == {"train@dkd_b4", "evaluate"}
    assert (repo / "cache" / "header.json").stat().st_mtime_ns == header_mtime
    shown = _run(["dvc", "metrics", "show", "--json"], repo, env)
    assert "top1_agreement" in shown and '"wer"' in shown
