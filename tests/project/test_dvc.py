"""`dvc repro` end to end in a temp git repo, and the no-teacher-rerun property of sweeps."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PIPELINE, ROOT, tiny_params, write_params
from lineage import command_closure
from test_lineage import stages

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
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    params = tiny_params()
    params["students"] = {k: params["students"][k] for k in ("ce", "kd", "dkd_b4")}
    params["sweep"]["students"] = {"dkd_b8": {"losses.dkd.beta": 8.0}}
    params["report"]["compare"] = [["dkd_b4", "kd"]]
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
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # hard-linked outputs
    return repo, env


def _expanded(stage: str, params: dict) -> set[str]:
    """The names DVC gives a stage of dvc.yaml (one per foreach item)."""
    items = {"train": params["students"], "evaluate_student": params["students"],
             "export": params["students"], "evaluate_sweep": params["sweep"]["students"],
             "evaluate_baseline": params["evaluate"]["baselines"]}.get(stage)  # fmt: skip
    return {stage} if items is None else {f"{stage}@{item}" for item in items}


def test_repro_then_one_change_reruns_exactly_what_depends_on_it(repo):
    repo, env = repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    declared = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    everything = set().union(*(_expanded(stage, params) for stage in declared))
    first = _run(["dvc", "repro"], repo, env)
    assert _ran(first) == everything
    metrics = yaml.safe_load((repo / "eval" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"teacher", "fbank", "random_teacher", "ce", "kd", "dkd_b4",
                                      "dkd_b8"}  # fmt: skip
    assert (repo / "eval" / "report.md").is_file() and (repo / "eval" / "report.png").is_file()
    exported = json.loads((repo / "exports" / "dkd_b4" / "export.json").read_text())
    assert set(exported["forms"]) == {"hf", "onnx", "onnx-int8"}
    assert exported["int8_agreement"]["split"] == params["export"]["agreement_split"]
    header_mtime = (repo / "cache" / "header.json").stat().st_mtime_ns

    # one student's loss: that student, its evaluation and the report; nothing else
    params["students"]["kd"]["losses"]["kd"]["tau"] = 2.0
    write_params(repo / "params.yaml", params)
    second = _run(["dvc", "repro"], repo, env)
    assert _ran(second) == {"train@kd", "evaluate_student@kd", "report", "export@kd"}
    assert "Stage 'cache_teacher' didn't change" in second
    assert (repo / "cache" / "header.json").stat().st_mtime_ns == header_mtime

    # a sweep point with `dvc exp run -S` (needs a commit) likewise
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "baseline"], repo, env)
    third = _run(["dvc", "exp", "run", "-S", "students.dkd_b4.losses.dkd.beta=8"], repo, env)
    assert _ran(third) == {"train@dkd_b4", "evaluate_student@dkd_b4", "report", "export@dkd_b4"}
    assert (repo / "cache" / "header.json").stat().st_mtime_ns == header_mtime
    shown = _run(["dvc", "metrics", "show", "--json"], repo, env)
    assert "top1_agreement" in shown and '"wer"' in shown

    # one line of a module training imports: exactly the stages whose commands import it
    edited = "pipeline/training/trainee.py"
    path = repo / edited
    path.write_text(path.read_text() + "\n# an edit\n")
    status = json.loads(_run(["dvc", "status", "--json"], repo, env))
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    importers = set()
    for name, command, _ in stages(dvc):
        if any(p.relative_to(ROOT).as_posix() == edited for p in command_closure(ROOT, command)):
            importers |= _expanded(name, params)
    assert importers == {f"train@{n}" for n in params["students"]} | {"sweep"}
    assert set(status) == importers


def _experiments(shown: list[dict]) -> dict[str, dict]:
    """``dvc exp show --json`` -> {experiment name: its metrics, file -> values}."""
    out = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                metrics = (rev.get("data") or {}).get("metrics") or {}
                out[rev["name"]] = {f: m.get("data", {}) for f, m in metrics.items()}
    return out


def test_queued_experiments_never_run_the_teacher_and_keep_their_metrics(repo):
    """`dvc exp run --queue` twice, then the queue (`--run-all` runs it in the foreground, in
    temporary workspaces as `dvc queue start` does): the teacher cache reaches them through
    DVC's cache, hard-linked, so stage one runs in neither, and `dvc exp show` holds each
    experiment's student metrics, evaluation and training log."""
    repo, env = repo
    _run(["dvc", "repro"], repo, env)
    header = repo / "cache" / "header.json"
    assert header.stat().st_nlink == 2  # the workspace's cache is a hard link into .dvc/cache
    seeds = yaml.safe_load((repo / "params.yaml").read_text())["students"]["dkd_b4"]["seeds"]
    logged = repo / "students" / "dkd_b4" / "plots" / "metrics"
    for seed in seeds:  # dvclive, each training seed under its own label
        assert (logged / f"seed{seed}" / "loss.tsv").is_file()
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "baseline"], repo, env)
    for beta in (2, 16):
        _run(["dvc", "exp", "run", "--queue", "--name", f"beta{beta}", "-S",
              f"students.dkd_b4.losses.dkd.beta={beta}"], repo, env)  # fmt: skip
    output = _run(["dvc", "exp", "run", "--run-all"], repo, env)
    assert "Running stage 'cache_teacher'" not in output
    assert output.count("Running stage 'train@dkd_b4'") == 2
    assert output.count("Stage 'cache_teacher' didn't change, skipping") == 2

    experiments = _experiments(json.loads(_run(["dvc", "exp", "show", "--json"], repo, env)))
    assert {"beta2", "beta16"} <= set(experiments)
    for name in ("beta2", "beta16"):
        metrics = experiments[name]
        test = metrics["eval/models/dkd_b4.json"]["splits"]["test"]
        assert {"wer", "cer", "per", "top1_agreement", "kl"} <= set(test)
        trained = metrics["students/dkd_b4/metrics.json"]  # two training seeds, each logged
        assert {"loss", "dkd", "parameters"} <= set(trained["seed1"]) and "seconds" in trained
        assert "dkd_b8" in metrics["sweeps/training/metrics.json"]  # the sweep's students too
        compared = metrics["eval/metrics.json"]["comparisons"]["dkd_b4 vs kd"]["test"]
        assert compared["per"]["verdict"] in ("better", "worse", "not resolved")
        assert compared["per"]["design"] == "paired by seed"  # one architecture, same seeds
    trained = [experiments[n]["students/dkd_b4/metrics.json"]["seed0"]["loss"]
               for n in ("beta2", "beta16")]  # fmt: skip
    assert trained[0] != trained[1]  # each experiment keeps its own numbers

    # the same student in two queued experiments, paired by utterance, read through DVC
    shown = _run([PIPELINE, "compare", "dkd_b4@beta2", "dkd_b4@beta16"], repo, env)
    assert re.search(r"test PER: dkd_b4@beta2 - dkd_b4@beta16 = [-+]\d+\.\d \[[-+]", shown)
    assert "paired by seed (2 seeds)" in shown, shown  # one architecture, the same seeds
    ours = json.loads((repo / "eval" / "models" / "dkd_b4.json").read_text())
    theirs = json.loads(_run(["git", "show", "HEAD:eval/models/dkd_b4.json"], repo, env))
    assert ours == theirs  # the workspace is the baseline: the two experiments were read
    missing = subprocess.run([PIPELINE, "compare", "dkd_b4@nothing", "kd"], cwd=repo, env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 1 and "eval/models/dkd_b4.json at nothing" in missing.stderr


def test_a_corpus_inside_the_corpus_output_survives_dvc_repro(repo):
    """The issue's layout under DVC: a Kaldi directory at data/train. `dvc repro` would delete
    `data` before running `prepare` if it were not persisted; persisted, `prepare` refuses the
    corpus inside it, and the corpus survives. Moved out, it is prepared; a file of the user's
    put into `data` later stops the next run, named, and stays."""
    from corpora import kaldi_dir

    repo, env = repo
    kaldi_dir(repo)  # data/train/{wav.scp,segments,text,utt2spk}, audio/*.flac
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"]["source"] = {"kind": "kaldi", "dir": "data/train", "root": "."}
    write_params(repo / "params.yaml", params)
    corpus = {p.relative_to(repo): p.read_bytes() for p in (repo / "data").rglob("*")
              if p.is_file()}  # fmt: skip

    def repro() -> subprocess.CompletedProcess:
        return subprocess.run(["dvc", "repro", "prepare"], cwd=repo, env=env,
                              capture_output=True, text=True)  # fmt: skip

    refused = repro()
    assert refused.returncode != 0
    assert "data/train (prepare.source.dir) is inside" in refused.stderr, refused.stderr
    assert {p.relative_to(repo): p.read_bytes() for p in (repo / "data").rglob("*")
            if p.is_file()} == corpus  # fmt: skip

    (repo / "corpora" / "kaldi").mkdir(parents=True)
    (repo / "data" / "train").rename(repo / "corpora" / "kaldi" / "train")
    params["prepare"]["source"]["dir"] = "corpora/kaldi/train"
    write_params(repo / "params.yaml", params)
    assert repro().returncode == 0
    assert len((repo / "data" / "manifest.jsonl").read_text().splitlines()) == 6

    (repo / "data" / "notes.txt").write_text("mine")
    params["prepare"]["dev_fraction"] = 0.2  # prepare must run again
    write_params(repo / "params.yaml", params)
    refused = repro()
    assert refused.returncode != 0 and "data/notes.txt was not written by" in refused.stderr
    assert (repo / "data" / "notes.txt").read_text() == "mine"
    assert (repo / "data" / "manifest.jsonl").is_file()


def test_a_fresh_clone_is_up_to_date_after_dvc_pull(repo, tmp_path):
    """The demo's shape (a sweep of no students): `dvc repro` finds no output empty, and a
    clone of the committed project, after `dvc pull` from its remote, is up to date: every
    output a clone restores (git's files, DVC's cache) is what `dvc.lock` records."""
    repo, env = repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["students"] = {"kd": params["students"]["kd"]}
    params["sweep"]["students"] = {}  # the demo's
    params["evaluate"]["baselines"] = []
    params["report"]["compare"] = [["kd", "teacher"]]
    write_params(repo / "params.yaml", params)
    _run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], repo, env)
    output = _run(["dvc", "repro"], repo, env)
    assert "is empty" not in output, output
    assert json.loads((repo / "sweeps" / "models" / "sweep.json").read_text()) == {}
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "the demo, run"], repo, env)
    _run(["dvc", "push"], repo, env)

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    _run(["dvc", "pull"], clone, env)
    status = subprocess.run(["dvc", "status", "--json"], cwd=clone, env=env, capture_output=True,
                            text=True, check=True)  # fmt: skip
    assert json.loads(status.stdout) == {}, status.stdout
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], clone, env)
