"""A corpus that moves (another mount point, another node) keeps everything that depends on its
content: the manifest byte for byte, the cache's committed parts, a training checkpoint; and
`dvc repro` re-runs `prepare` only."""

import json
import os
import shutil
import signal
import subprocess

import pytest
from conftest import PIPELINE, tiny_params, write_params
from corpora import hf_shards, kaldi_dir
from test_dvc import _ran, _run, repo  # noqa: F401  (the temp DVC repository fixture)
from typer.testing import CliRunner

from cli.main import app
from pipeline.core.faults import FAULT

runner = CliRunner()


def _params(tmp_path, root):
    params = tiny_params()
    params["prepare"]["source"] = {"kind": "librispeech", "root": str(root)}
    params["cache_teacher"]["shard_utterances"] = 2  # several parts
    params["train"].update(steps=8, checkpoint_every=4, log_every=2)
    params["students"] = {"kd": params["students"]["kd"]}
    return write_params(tmp_path / "params.yaml", params)


def _move(corpus, to, params_file):
    """Move the corpus and point the params at its new place."""
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(corpus, to)
    params = json.loads(json.dumps(__import__("yaml").safe_load(params_file.read_text())))
    params["prepare"]["source"]["root"] = str(to)
    write_params(params_file, params)
    return to


def test_a_moved_corpus_keeps_its_manifest_its_cache_and_a_training_checkpoint(
    librispeech, tmp_path
):
    corpus = tmp_path / "mnt-a" / "LibriSpeech"
    shutil.copytree(librispeech, corpus)
    params = _params(tmp_path, corpus)
    data, cache, out = tmp_path / "data", tmp_path / "cache", tmp_path / "kd"
    args = ["--params", str(params)]
    manifest = ["--manifest", str(data / "manifest.jsonl")]

    def ok(*command):
        result = runner.invoke(app, [*command, *args])
        assert result.exit_code == 0, (command, result.output)

    ok("prepare", "--out", str(data))
    rows = (data / "manifest.jsonl").read_text()
    assert str(corpus) not in rows  # paths relative to the corpus's root
    ok("cache-teacher", *manifest, "--out", str(cache), "--shard", "0/2")
    before = {p.name: p.stat().st_ino for p in cache.glob("parts/part-*")}
    assert before

    corpus = _move(corpus, tmp_path / "mnt-b" / "LibriSpeech", params)
    ok("prepare", "--out", str(data))
    assert (data / "manifest.jsonl").read_text() == rows  # the same corpus, byte for byte
    ok("cache-teacher", *manifest, "--out", str(cache))
    after = {p.name: p.stat().st_ino for p in cache.glob("parts/part-*")}
    assert {n: after[n] for n in before} == before  # the parts made before the move are kept

    command = [PIPELINE, "train-student", "kd", *args, *manifest, "--cache", str(cache),
               "--out", str(out)]  # fmt: skip
    env = {**os.environ, FAULT: "checkpoint:4"}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    _move(corpus, tmp_path / "mnt-c" / "LibriSpeech", params)
    ok("prepare", "--out", str(data))
    ok("train-student", "kd", *manifest, "--cache", str(cache), "--out", str(out))
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 4


def _kaldi(corpus):
    return {"kind": "kaldi", "dir": str(kaldi_dir(corpus)), "root": str(corpus)}


def _hf(corpus):
    return {"kind": "hf", "path": str(hf_shards(corpus))}


@pytest.mark.parametrize("source", [_kaldi, _hf], ids=["kaldi-segments", "hf-parquet"])
def test_a_moved_kaldi_directory_or_parquet_folder_keeps_its_manifest_and_cache(tmp_path, source):
    """Utterances that are ranges of recordings or rows of shards move as files do: the same
    manifest, byte for byte, and every part of the cache kept."""
    corpus = tmp_path / "mnt-a" / "corpus"
    params = tiny_params()
    params["prepare"]["source"] = source(corpus)
    params["cache_teacher"]["shard_utterances"] = 2  # several parts
    args = ["--params", str(write_params(tmp_path / "params.yaml", params))]
    data, cache = tmp_path / "data", tmp_path / "cache"
    commands = (
        ["prepare", "--out", str(data)],
        ["cache-teacher", "--manifest", str(data / "manifest.jsonl"), "--out", str(cache)],
    )

    def ok(command):
        result = runner.invoke(app, [*command, *args])
        assert result.exit_code == 0, (command, result.output)

    for command in commands:
        ok(command)
    rows = (data / "manifest.jsonl").read_text()
    assert str(corpus) not in rows and ('"start"' in rows or '"row"' in rows)
    before = {p.name: p.stat().st_ino for p in cache.glob("parts/part-*")}
    assert len(before) > 1

    moved = tmp_path / "mnt-b" / "corpus"
    moved.parent.mkdir()
    shutil.move(corpus, moved)
    text = (tmp_path / "params.yaml").read_text().replace(str(corpus), str(moved))
    (tmp_path / "params.yaml").write_text(text)
    for command in commands:
        ok(command)
    assert (data / "manifest.jsonl").read_text() == rows
    assert {p.name: p.stat().st_ino for p in cache.glob("parts/part-*")} == before


@pytest.mark.slow
def test_dvc_reruns_only_prepare_when_the_corpus_moves(repo, librispeech):  # noqa: F811
    repo, env = repo
    corpus = repo.parent / "mnt-a" / "LibriSpeech"
    shutil.copytree(librispeech, corpus)
    params = _params(repo, corpus)
    first = _run(["dvc", "repro", "cache_teacher"], repo, env)
    assert _ran(first) == {"prepare", "cache_teacher"}
    _move(corpus, repo.parent / "mnt-b" / "LibriSpeech", params)
    second = _run(["dvc", "repro", "cache_teacher"], repo, env)
    assert _ran(second) == {"prepare"} and "Stage 'cache_teacher' didn't change" in second
