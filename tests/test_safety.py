"""A user's data is never lost or silently corrupted: owned outputs, one writer, verified caches,
settings that cannot train backwards, and one-line errors that name the file or key."""

import json
import os
import pickle
import shutil
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import dead_pid, store, tiny_params, write_params
from typer.testing import CliRunner

from cli.main import app
from pipeline.core.config import section
from pipeline.core.errors import OutputError
from pipeline.core.locks import output_lock
from pipeline.teacher.caching import CacheTeacherConfig
from stages import cache_teacher
from storage import read_header, verify_cache
from storage.header import HEADER
from storage.header import json_digest as header_digest

runner = CliRunner()


def _params(tmp_path, edit=None) -> list[str]:
    params = tiny_params()
    params["students"] = {k: params["students"][k] for k in ("kd", "dkd_b4")}
    if edit:
        edit(params)
    write_params(tmp_path / "params.yaml", params)
    return ["--params", str(tmp_path / "params.yaml")]


def _tone(path: Path, samples: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), 0.3 * np.sin(np.arange(samples) / 5.0), 16_000)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def _one_line_error(result, *needles: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


def _copy_cache(tiny_cache: Path, tmp_path: Path, name: str = "cache") -> Path:
    out = tmp_path / name
    shutil.copytree(tiny_cache, out)
    return out


# --- 1. never delete what the user did not ask to replace ------------------------------------


def test_prepare_refuses_a_folder_holding_the_users_corpus(tmp_path):
    corpus = tmp_path / "mycorpus"
    for i in range(3):
        _tone(corpus / "audio" / f"u{i}.wav")
    (corpus / "list.jsonl").write_text(
        "\n".join(json.dumps({"audio": f"audio/u{i}.wav"}) for i in range(3)) + "\n"
    )
    before = _snapshot(corpus)

    def use_list(params):
        params["prepare"]["source"] = {"kind": "manifest", "path": str(corpus / "list.jsonl")}

    args = _params(tmp_path, use_list)
    result = runner.invoke(app, ["prepare", "--out", str(corpus), *args])
    _one_line_error(result, f"{corpus}/list.jsonl (prepare.source.path) is inside {corpus}")
    assert _snapshot(corpus) == before
    (corpus / "list.jsonl").rename(tmp_path / "list.jsonl")  # the list outside, its audio not
    args = _params(tmp_path, lambda p: p["prepare"].update(source={
        "kind": "manifest", "path": str(tmp_path / "list.jsonl")}))  # fmt: skip
    (tmp_path / "list.jsonl").write_text(
        "".join(json.dumps({"audio": str(corpus / "audio" / f"u{i}.wav")}) + "\n" for i in range(3))
    )
    result = runner.invoke(app, ["prepare", "--out", str(corpus), *args])
    _one_line_error(result, str(corpus), "refusing to replace it", "not a hubert-kd output")
    assert _snapshot(corpus) == {k: v for k, v in before.items() if k != "list.jsonl"}


def _kaldi_at(data: Path) -> Path:
    """A Kaldi directory at ``data`` whose recordings are elsewhere."""
    from corpora import kaldi_dir

    kaldi_dir(data.parent.parent / "recipe", segments=False)
    shutil.copytree(data.parent.parent / "recipe" / "data" / "train", data)
    scp = data / "wav.scp"
    scp.write_text(scp.read_text().replace(" utts/", f" {data.parent.parent}/recipe/utts/"))
    return data


def test_prepare_never_deletes_what_it_did_not_write(tmp_path):
    """The issue's layout: a Kaldi directory at data/train, inside the folder an earlier prepare
    wrote (params.yaml once suggested it). Named as the source, it is refused before any work;
    left there while another corpus is prepared, it stops the run, named; either way it and the
    earlier corpus stay as they were. Without it, the earlier corpus is replaced, and only the
    files its marker lists are removed."""
    from pipeline.core.io import MARKER

    data = tmp_path / "data"
    kaldi = _kaldi_at(tmp_path / "corpora" / "train")
    use = {"kind": "kaldi", "dir": str(kaldi)}
    args = _params(tmp_path, lambda p: p["prepare"].update(source=use))
    assert runner.invoke(app, ["prepare", "--out", str(data), *args]).exit_code == 0
    written = json.loads((data / MARKER).read_text())["files"]
    assert sorted(written) == ["manifest.jsonl", "summary.json"]

    shutil.copytree(kaldi, data / "train")
    before = _snapshot(data)
    inside = _params(tmp_path, lambda p: p["prepare"].update(source={**use, "dir": str(
        data / "train")}))  # fmt: skip
    result = runner.invoke(app, ["prepare", "--out", str(data), *inside])
    _one_line_error(result, f"{data}/train (prepare.source.dir) is inside {data}, the folder "
                    "this run writes (--out): move it out of there (e.g. to corpora/)")  # fmt: skip
    assert _snapshot(data) == before
    args = _params(tmp_path, lambda p: p["prepare"].update(source=use))  # the corpus elsewhere
    result = runner.invoke(app, ["prepare", "--out", str(data), *args])
    _one_line_error(result, f"{data}: refusing to replace it: {data}/train/ was not written by "
                    "the earlier corpus output there. Move it out of")  # fmt: skip
    assert _snapshot(data) == before

    shutil.rmtree(data / "train")
    (tmp_path / ".data.old-1").mkdir()  # a killed run's: its files listed, and one of yours
    (tmp_path / ".data.old-1" / MARKER).write_text(json.dumps({"kind": "corpus", "files": ["a"]}))
    for name in ("a", "yours"):
        (tmp_path / ".data.old-1" / name).write_text(name)
    assert runner.invoke(app, ["prepare", "--out", str(data), *args]).exit_code == 0
    assert sorted(p.name for p in data.iterdir()) == [MARKER, "manifest.jsonl", "summary.json"]
    assert sorted(p.name for p in (tmp_path / ".data.old-1").iterdir()) == ["yours"]


def test_an_output_of_an_earlier_version_is_replaced_only_where_rewritten(tmp_path):
    """A marker without a list of files (written before outputs recorded them): the folder is
    replaced when the new output rewrites every file in it, and refused when it holds more."""
    from pipeline.core.io import MARKER, atomic_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "export", "tool": "hubert-kd"}))
    (out / "model.onnx").write_text("old")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=rf"{out}/notes\.txt was not written by the earlier"):
        with atomic_dir(out, kind="export") as tmp:
            (tmp / "model.onnx").write_text("new")
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.onnx").read_text() == "old"
    (out / "notes.txt").unlink()
    with atomic_dir(out, kind="export") as tmp:
        (tmp / "model.onnx").write_text("new")
    assert (out / "model.onnx").read_text() == "new"
    assert json.loads((out / MARKER).read_text())["files"] == ["model.onnx"]


DVC_YAML = """
stages:
  prepare:
    cmd: pipeline prepare --out data
    outs:
      - data:
          persist: true
  train:
    foreach: ${students}
    do:
      cmd: pipeline train-student ${key}
      outs:
        - students/${key}/model.pt
      metrics:
        - students/${key}/metrics.json:
            cache: false
  export:
    foreach: ${nowhere}
    do:
      cmd: pipeline export ${key}
      outs:
        - exports/${key}
  lists:
    foreach: [a, b]
    do:
      cmd: echo ${item}
      plots:
        - plots/${item}.json
"""


def test_a_corpus_inside_an_output_of_the_dvc_project_is_refused(tmp_path, monkeypatch):
    """The dvc.yaml above the working folder declares outputs (a foreach stage's expanded over
    params.yaml, an unresolved one standing for the folder before its ${...}): a list or its
    audio inside one is refused before any work, naming the stage; beside them is fine."""
    from pipeline.core.outputs import dvc_outputs

    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "dvc.yaml").write_text(DVC_YAML)
    (project / "params.yaml").write_text("students: {kd: {}, ce: {}}\n")
    assert dvc_outputs(project) == [
        ("prepare", "data"), ("train@kd", "students/kd/model.pt"),
        ("train@kd", "students/kd/metrics.json"), ("train@ce", "students/ce/model.pt"),
        ("train@ce", "students/ce/metrics.json"), ("export", "exports"),
        ("lists@a", "plots/a.json"), ("lists@b", "plots/b.json"),
    ]  # fmt: skip
    monkeypatch.chdir(project)
    for folder, stage in (("exports/kd", "export"), ("students/kd/model.pt", "train@kd")):
        listing = project / folder / "list.jsonl"
        _tone(project / folder / "u0.wav")
        listing.write_text(json.dumps({"audio": "u0.wav"}) + "\n")
        args = _params(tmp_path, lambda p, path=listing: p["prepare"].update(
            source={"kind": "manifest", "path": str(path)}))  # fmt: skip
        result = runner.invoke(app, ["prepare", "--out", str(tmp_path / "out"), *args])
        _one_line_error(result, f"{listing} (prepare.source.path) is inside {project}/"
                        f"{folder.split('/')[0] if stage == 'export' else folder}, an output of "
                        f"stage {stage!r} in {project}/dvc.yaml")  # fmt: skip
    beside = project / "students" / "corpus" / "list.jsonl"
    _tone(project / "corpora" / "u0.wav")
    beside.parent.mkdir(parents=True)
    beside.write_text(json.dumps({"audio": str(project / "corpora" / "u0.wav")}) + "\n")
    use = {"kind": "manifest", "path": str(beside)}
    args = _params(tmp_path, lambda p: p["prepare"].update(source=use))
    assert runner.invoke(app, ["prepare", "--out", str(tmp_path / "out"), *args]).exit_code == 0
    (project / "dvc.yaml").write_text("stages:\n  prepare: {cmd: x\n")
    result = runner.invoke(app, ["prepare", "--out", str(tmp_path / "out"), *args])
    _one_line_error(result, f"{project}/dvc.yaml:3:1: not valid YAML", code=2)


@pytest.mark.parametrize(
    "text",
    ["[1, 2]\n", "stages: [a]\n", "stages:\n  s: {outs: data}\n", "stages:\n  s: {outs: [{}]}\n",
     "stages:\n  s: {foreach: [a], do: 5}\n", "stages:\n  s: 5\n"],
)  # fmt: skip
def test_a_dvc_yaml_of_another_shape_declares_nothing_and_breaks_nothing(tmp_path, text):
    from pipeline.core.outputs import dvc_outputs

    (tmp_path / "dvc.yaml").write_text(text)
    (tmp_path / "params.yaml").write_text("- not a mapping\n")
    assert dvc_outputs(tmp_path) == []


def test_the_repository_persists_the_corpus_output_and_protects_its_outputs():
    """DVC would delete `data` before re-running `prepare`, and with it anything inside."""
    import yaml
    from conftest import ROOT

    from pipeline.core.outputs import dvc_outputs

    prepare = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["prepare"]
    assert prepare["outs"] == [{"data": {"persist": True}}]
    declared = dvc_outputs(ROOT)
    assert {("prepare", "data"), ("cache_teacher", "cache"), ("export@kd", "exports/kd"),
            ("train@kd", "students/kd/model.pt")} <= set(declared)  # fmt: skip


def test_cache_teacher_refuses_the_corpus_folder_but_replaces_its_own_cache(tiny_corpus, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_corpus.parent, data)
    before = _snapshot(data)
    args = [*_params(tmp_path), "--manifest", str(data / "manifest.jsonl")]
    result = runner.invoke(app, ["cache-teacher", "--out", str(data), *args])
    _one_line_error(result, str(data), "hubert-kd corpus output")
    assert _snapshot(data) == before
    for _ in range(2):  # an earlier cache is ours to replace
        result = runner.invoke(app, ["cache-teacher", "--out", str(tmp_path / "cache"), *args])
        assert result.exit_code == 0, result.output


def test_upload_refuses_a_url_holding_other_data(tiny_corpus, tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/safety-test/results/notes.txt", b"precious")
    args = [*_params(tmp_path), "--manifest", str(tiny_corpus)]
    result = runner.invoke(app, ["cache-teacher", "--out", "memory://safety-test/results", *args])
    _one_line_error(result, "memory://safety-test/results", "not a hubert-kd cache")
    assert fs.cat_file("/safety-test/results/notes.txt") == b"precious"
    fs.rm("/safety-test", recursive=True)


# --- 2. one writer at a time ------------------------------------------------------------------


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tiny_corpus, tmp_path):
    args = [*_params(tmp_path), "--manifest", str(tiny_corpus)]
    out = tmp_path / "cache"
    with output_lock(out):
        result = runner.invoke(app, ["cache-teacher", "--out", str(out), *args])
    _one_line_error(result, "another run is writing it", f"pid {os.getpid()}")
    assert not out.exists()

    lock = tmp_path / ".cache.lock"
    lock.write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename, "start": None}))
    result = runner.invoke(app, ["cache-teacher", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    assert not lock.exists() and verify_cache(out) == []


@pytest.mark.parametrize("backend", ["zarr", "webdataset"])
def test_checksums_are_of_the_bytes_written_not_of_the_disk_at_close(tmp_path, backend):
    """A file changed behind the writer's back before it commits must not verify."""
    from test_storage import BACKEND_CONFIGS, PARTS, _codec, _fields, _header

    from storage import finalize, open_part, prepare_location

    codec = _codec("full32")
    header = _header(codec, backend)
    prepare_location(tmp_path / "c")
    with open_part(tmp_path / "c", "part-a", header, BACKEND_CONFIGS[backend]) as part:
        for key in PARTS["part-a"]:
            part.write(key, _fields(codec, key))
        inside = [p.relative_to(part.folder).as_posix() for p in part.folder.rglob("*")
                  if p.is_file()]  # fmt: skip
        done = [n for n in inside if "/c/" in n or n.endswith(".tar")]  # chunks, closed shards
        victim = part.folder / sorted(done)[0]
        victim.write_bytes(victim.read_bytes()[:-3] + b"xyz")  # another process overwrites it
    finalize(tmp_path / "c", header, ["part-a"], None)
    problems = verify_cache(tmp_path / "c")
    assert [p for p in problems if "checksum mismatch" in p and victim.name in p], problems


# --- 3. never train on a damaged cache --------------------------------------------------------


def _train(tmp_path, tiny_corpus, cache, *extra):
    args = [*_params(tmp_path), "--manifest", str(tiny_corpus), "--cache", str(cache)]
    return runner.invoke(app, ["train-student", "kd", "--out", str(tmp_path / "kd"), *args, *extra])


def _chunk(cache: Path) -> Path:
    return sorted(p for p in cache.glob("parts/*/logits/c/**/*") if p.is_file())[0]


@pytest.mark.parametrize("damage", ["flip", "delete", "truncate"])
def test_training_stops_on_a_damaged_zarr_chunk_naming_it(
    tiny_corpus, tiny_cache, tmp_path, damage
):
    cache = _copy_cache(tiny_cache, tmp_path)
    chunk = _chunk(cache)
    data = bytearray(chunk.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        chunk.write_bytes(bytes(data))
    elif damage == "delete":
        chunk.unlink()
    else:
        chunk.write_bytes(bytes(data[: len(data) // 2]))
    result = _train(tmp_path, tiny_corpus, cache)
    name = chunk.relative_to(cache).as_posix()
    _one_line_error(result, name, "missing" if damage == "delete" else "checksum mismatch")
    assert not (tmp_path / "kd" / "model.pt").exists()


def test_training_stops_on_a_damaged_webdataset_shard(tiny_corpus, tmp_path):
    args = [*_params(tmp_path, lambda p: store(p, backend="webdataset"))]
    result = runner.invoke(
        app, ["cache-teacher", "--out", str(tmp_path / "c"), "--manifest", str(tiny_corpus), *args]
    )
    assert result.exit_code == 0, result.output
    shard = sorted((tmp_path / "c").glob("parts/*/cache-000000.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[-2048] ^= 0x01  # inside the last member's data: the tar still parses
    shard.write_bytes(bytes(data))
    result = _train(tmp_path, tiny_corpus, tmp_path / "c")
    _one_line_error(result, "cache-000000.tar: checksum mismatch")
    shard.unlink()
    result = _train(tmp_path, tiny_corpus, tmp_path / "c")
    _one_line_error(result, "cache-000000.tar: missing")


def test_an_edited_header_fails_verification_and_training(tiny_corpus, tiny_cache, tmp_path):
    cache = _copy_cache(tiny_cache, tmp_path)
    raw = json.loads((cache / HEADER).read_text())
    fingerprint = "0" * 64
    raw.update(teacher="hf:facebook/hubert-large-ll60k", fingerprint=fingerprint)
    (cache / HEADER).write_text(json.dumps(raw))
    result = runner.invoke(app, ["cache-verify", str(cache)])
    _one_line_error(result, "header.json: the header was edited or damaged")
    result = _train(tmp_path, tiny_corpus, cache)
    _one_line_error(result, "header.json: the header was edited or damaged")


# --- 4. settings that cannot silently train backwards -----------------------------------------


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda p: p["students"]["dkd_b4"]["losses"]["dkd"].update(alpha=-1.0),
         "students.dkd_b4.losses.dkd.alpha"),
        (lambda p: p["students"]["dkd_b4"]["losses"]["dkd"].update(beta=-4.0),
         "students.dkd_b4.losses.dkd.beta"),
        (lambda p: p["students"]["kd"]["losses"]["kd"].update(weight=-1.0),
         "students.kd.losses.kd.weight"),
        (lambda p: p["train"].update(grad_clip=-1.0), "train.grad_clip"),
        (lambda p: p["train"].update(lr=-0.001), "train.lr"),
        (lambda p: p["train"].update(threads=0), "train.threads"),
        (lambda p: p["train"].update(device="gpu"), "train.device"),
    ],
)  # fmt: skip
def test_settings_that_would_train_backwards_are_config_errors(
    tiny_corpus, tiny_cache, tmp_path, edit, key
):
    args = [*_params(tmp_path, edit), "--manifest", str(tiny_corpus), "--cache", str(tiny_cache)]
    result = runner.invoke(app, ["train-student", "kd", "--out", str(tmp_path / "kd"), *args])
    _one_line_error(result, key, code=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_a_config_error(tiny_corpus, tiny_cache, tmp_path):
    args = [*_params(tmp_path, lambda p: p["train"].update(device="cuda"))]
    args += ["--manifest", str(tiny_corpus), "--cache", str(tiny_cache)]
    result = runner.invoke(app, ["train-student", "kd", "--out", str(tmp_path / "kd"), *args])
    _one_line_error(result, "train.device: cuda asked for, but CUDA is not available", code=2)
    args = [*_params(tmp_path, lambda p: p["cache_teacher"]["teacher"].update(device="cuda"))]
    result = runner.invoke(app, ["cache-teacher", "--out", str(tmp_path / "c"), "--manifest",
                                 str(tiny_corpus), *args])  # fmt: skip
    _one_line_error(result, "cache_teacher.teacher.device", code=2)


# --- 5. what passes prepare is usable by every later stage ------------------------------------


def _listing(tmp_path, rows) -> list[str]:
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    params = tiny_params()
    params["prepare"].update(max_bad_fraction=0.5)
    params["prepare"]["source"] = {"kind": "manifest", "path": str(tmp_path / "list.jsonl")}
    write_params(tmp_path / "params.yaml", params)
    return ["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "data")]


def test_prepare_rejects_or_skips_clips_shorter_than_one_frame(tmp_path):
    rows = [{"audio": str(_tone(tmp_path / f"ok{i}.wav"))} for i in range(3)]
    rows.append({"audio": str(_tone(tmp_path / "short.wav", samples=399))})
    args = _listing(tmp_path, rows)
    result = runner.invoke(app, ["prepare", *args])
    _one_line_error(result, "short.wav: 399 samples at 16 kHz, shorter than one teacher frame")
    result = runner.invoke(app, ["prepare", "--skip-bad", *args])
    assert result.exit_code == 0 and "'skipped': 1" in result.output, result.output


def test_a_part_is_named_by_its_audio_not_by_where_it_lives(tiny_corpus):
    """Audio fixed in place (same id and length) renames exactly its part, so its stale logits
    are never reused; the same audio under another root renames none."""
    from dataclasses import replace
    from types import SimpleNamespace

    from pipeline.corpus.manifest import read_manifest
    from pipeline.teacher.caching import plan_shards

    params = tiny_params()
    params["cache_teacher"]["shard_utterances"] = 4
    cfg = section(params, "cache_teacher", CacheTeacherConfig)
    header = SimpleNamespace(content=dict)  # plan_shards reads only the header's content
    utts = read_manifest(tiny_corpus)
    assert all(u.sha256 for u in utts)

    def names(rows):
        return [shard.name for shard in plan_shards(rows, cfg, header)]

    assert names([replace(u, audio=u.audio.under(Path("elsewhere"))) for u in utts]) == names(utts)
    fixed = names([replace(utts[0], sha256="0" * 64), *utts[1:]])
    assert [a != b for a, b in zip(names(utts), fixed, strict=True)].count(True) == 1


def test_dropping_an_utterance_keeps_the_unchanged_committed_shards(
    tiny_corpus, tmp_path, monkeypatch
):
    params = tiny_params()
    params["cache_teacher"]["shard_utterances"] = 2
    cfg = section(params, "cache_teacher", CacheTeacherConfig)
    rows = tiny_corpus.read_text().splitlines()
    manifest = tiny_corpus.parent / "manifest-copy.jsonl"  # audio paths stay valid beside it
    manifest.write_text("\n".join(rows) + "\n")
    real, calls = cache_teacher.run_shard, []

    def failing(*args, **kwargs):
        calls.append(args[4])  # the shard
        if len(calls) == 4:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_teacher, "run_shard", failing)
    with pytest.raises(RuntimeError, match="killed"):
        cache_teacher.run(cfg, manifest, tmp_path / "cache")
    committed = [shard.utts for shard in calls[:3]]
    dropped = committed[0][0].id  # an utterance of the first committed shard
    manifest.write_text("\n".join(r for r in rows if json.loads(r)["id"] != dropped) + "\n")
    calls.clear()

    def counting(*args, **kwargs):
        calls.append(args[4])  # the shard
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_teacher, "run_shard", counting)
    header = cache_teacher.run(cfg, manifest, tmp_path / "cache")
    redone = {u.id for shard in calls for u in shard.utts}
    assert header.num_utterances == len(rows) - 1
    kept = [shard for shard in committed[1:] if not {u.id for u in shard} & redone]
    assert len(kept) >= 1, "unchanged committed shards were recomputed"
    manifest.unlink()


# --- 6. one line naming the file, never a traceback -------------------------------------------


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("42", "list.jsonl:1: expected a JSON object"),
        ("null", "list.jsonl:1: expected a JSON object"),
        ('{"audio": 5}', "list.jsonl:1: 'audio' must be a path"),
        ('{"audio": "a.wav", "id": "..."}', "list.jsonl:1: cannot make an utterance id"),
    ],
)
def test_bad_list_rows_are_named(tmp_path, line, needle):
    args = _listing(tmp_path, [])
    (tmp_path / "list.jsonl").write_text(line + "\n")
    _one_line_error(runner.invoke(app, ["prepare", *args]), needle)


def test_non_utf8_lists_and_short_tsv_rows_are_named(tmp_path):
    args = _listing(tmp_path, [])
    (tmp_path / "list.jsonl").write_bytes(b'{"audio": "caf\xe9.wav"}\n')
    _one_line_error(runner.invoke(app, ["prepare", *args]), "list.jsonl:1: not UTF-8 text")
    wav = _tone(tmp_path / "a.wav")
    (tmp_path / "list.tsv").write_text(f"audio\ttranscript\n{wav}\n")
    params = json.loads(json.dumps(tiny_params()))
    params["prepare"]["source"] = {"kind": "manifest", "path": str(tmp_path / "list.tsv")}
    write_params(tmp_path / "params.yaml", params)
    result = runner.invoke(app, ["prepare", *args])
    _one_line_error(result, "list.tsv:2: 1 columns where the header names 2")


def _resign(cache: Path, edit) -> None:
    """Edit a header and recompute its digest, as a careless tool would."""
    raw = json.loads((cache / HEADER).read_text())
    raw = edit(raw)
    if isinstance(raw, dict):
        raw["digest"] = header_digest(raw)
    (cache / HEADER).write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda raw: [raw], "header.json: damaged header (a JSON object expected)"),
        (lambda raw: {**raw, "num_classes": "100"}, "header.json.num_classes: expected int"),
    ],
)
def test_malformed_headers_are_named(tiny_cache, tmp_path, edit, needle):
    cache = _copy_cache(tiny_cache, tmp_path)
    _resign(cache, edit)
    for command in ("cache-info", "cache-verify"):
        _one_line_error(runner.invoke(app, [command, str(cache)]), needle)


def test_a_truncated_training_state_is_named(tiny_corpus, tiny_cache, tmp_path):
    state = tmp_path / "kd" / "train_state.pt"
    state.parent.mkdir()
    torch.save({"identity": "x", "states": []}, state)
    state.write_bytes(state.read_bytes()[:200])
    result = _train(tmp_path, tiny_corpus, tiny_cache)
    _one_line_error(result, "train_state.pt: cannot read the training state", "delete it")


def _teacher_args(tmp_path, tiny_corpus, source, trust=False) -> list[str]:
    args = [*_params(tmp_path), "--manifest", str(tiny_corpus), "--out", str(tmp_path / "c")]
    return [*args, "--teacher", source, *(["--trust-checkpoint"] if trust else [])]


def test_damaged_or_foreign_teacher_files_are_named(tiny_corpus, tmp_path):
    truncated, foreign, legacy = tmp_path / "t.pt", tmp_path / "f.pt", tmp_path / "l.pt"
    torch.save({"model": {"w": torch.zeros(100)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    foreign.write_bytes(b"this is no checkpoint at all")
    torch.save([1, 2, 3], legacy, _use_new_zipfile_serialization=False)
    for path, needle in ((truncated, "damaged, truncated or not a torch file"),
                         (foreign, "damaged, truncated or not a torch file"),
                         (legacy, "not a fairseq checkpoint")):  # fmt: skip
        for trust in (False, True):
            args = _teacher_args(tmp_path, tiny_corpus, f"fairseq:{path}", trust)
            _one_line_error(runner.invoke(app, ["cache-teacher", *args]), str(path), needle)


def test_a_fairseq_named_function_in_a_trusted_checkpoint_never_runs(tiny_corpus, tmp_path):
    marker = tmp_path / "pwned"
    module = types.ModuleType("fairseq.evil")

    def run(path):  # what an attacker's pickle would call
        Path(path).write_text("ran")

    run.__module__, run.__qualname__ = "fairseq.evil", "run"
    module.run = run

    class Payload:
        def __reduce__(self):
            return run, (str(marker),)

    sys.modules["fairseq"] = types.ModuleType("fairseq")
    sys.modules["fairseq.evil"] = module
    try:
        torch.save({"model": {}, "cfg": Payload()}, tmp_path / "evil.pt")
    finally:
        sys.modules.pop("fairseq.evil")
        sys.modules.pop("fairseq")
    args = _teacher_args(tmp_path, tiny_corpus, f"fairseq:{tmp_path / 'evil.pt'}", trust=True)
    result = runner.invoke(app, ["cache-teacher", *args])
    _one_line_error(result, "evil.pt")
    assert not marker.exists()


def test_params_that_is_a_folder_is_named(tmp_path):
    result = runner.invoke(app, ["train-student", "kd", "--params", str(tmp_path)])
    _one_line_error(result, str(tmp_path), "is a folder", code=2)


def test_a_missing_webdataset_tar_is_named(tiny_corpus, tmp_path):
    args = [*_params(tmp_path, lambda p: store(p, backend="webdataset", shard_utterances=4))]
    cmd = ["cache-teacher", "--out", str(tmp_path / "c"), "--manifest", str(tiny_corpus), *args]
    assert runner.invoke(app, cmd).exit_code == 0
    victim = sorted((tmp_path / "c").glob("parts/*/cache-*.tar"))[-1]
    victim.unlink()
    result = _train(tmp_path, tiny_corpus, tmp_path / "c")
    _one_line_error(result, f"{victim.name}: missing")


# --- 7. safe by default in the docs and for k-means files --------------------------------------


def test_the_readme_webdataset_recipe_never_unpickles(tmp_path):
    import webdataset as wds

    from storage.wds_store import decode_sample

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    shard = tmp_path / "cache-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("u1.json", b'{"id": "u1", "num_frames": 1}'),
                           ("u1.evil.pyd", pickle.dumps(Payload()))):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, __import__("io").BytesIO(data))
    (sample,) = list(wds.WebDataset(str(shard), shardshuffle=False).map(decode_sample))
    assert sample["json"]["id"] == "u1" and isinstance(sample["evil.pyd"], bytes)
    assert not marker.exists()
    docs = (Path(__file__).parents[1] / "docs" / "cache.md").read_text()  # what users copy
    assert ".map(decode_sample)" in docs and "shardshuffle=False).decode()" not in docs


def test_kmeans_pickles_need_the_flag_and_are_sandboxed_under_it(tmp_path):
    from pipeline.core.errors import CheckpointError
    from pipeline.teacher.kmeans import load_centroids

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    import joblib

    joblib.dump({"cluster_centers_": Payload()}, tmp_path / "km.bin")
    with pytest.raises(CheckpointError, match="km.bin: a joblib/scikit-learn k-means file"):
        load_centroids(tmp_path / "km.bin", trust=False)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_centroids(tmp_path / "km.bin", trust=True)
    assert not marker.exists()
    centroids = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "km.npy", centroids)
    from safetensors.numpy import save_file

    save_file({"centroids": centroids}, tmp_path / "km.safetensors")
    for name in ("km.npy", "km.safetensors"):
        np.testing.assert_array_equal(load_centroids(tmp_path / name, trust=False), centroids)


def test_header_of_a_fresh_cache_verifies(tiny_cache):
    assert verify_cache(tiny_cache) == [] and read_header(tiny_cache).checksums


def test_a_lock_silent_past_its_lease_is_taken_over_from_any_host(tmp_path, monkeypatch):
    """A cluster job killed on another machine leaves its lock on the shared filesystem: once
    its heartbeat is older than the lease, the lock is taken over; a fresh one is respected."""
    import time

    lock = tmp_path / ".out.lock"
    owner = {"pid": 1, "host": "another-machine", "start": None, "since": "then"}
    lock.write_text(json.dumps({**owner, "beat": time.time()}))
    with pytest.raises(Exception, match="another run is writing it .pid 1 on another-machine"):
        with output_lock(tmp_path / "out"):
            pass
    lock.write_text(json.dumps({**owner, "beat": time.time() - 3600}))
    with output_lock(tmp_path / "out"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    monkeypatch.setenv("HUBERT_KD_LOCK_LEASE", "0.2")  # the heartbeat renews a held lock
    with output_lock(tmp_path / "out"):
        first = json.loads(lock.read_text())["beat"]
        deadline = time.monotonic() + 120  # a renewal every 0.05 s: only a stalled host waits
        while json.loads(lock.read_text())["beat"] == first:
            assert time.monotonic() < deadline, "the heartbeat never renewed the lock"
            time.sleep(0.01)


def test_a_lock_is_created_holding_its_owner_and_an_ownerless_one_expires(tmp_path, monkeypatch):
    """A lock appears with its owner already in it (a run killed while taking it leaves no
    empty lock that blocks the rerun); an unreadable lock is respected until it is older than
    the lease, then taken over."""
    import time

    from pipeline.core.locks import _create

    lock = tmp_path / ".out.lock"
    fs = __import__("fsspec").filesystem("file")
    _create(fs, str(lock), {"pid": 7})
    assert json.loads(lock.read_text()) == {"pid": 7}
    assert [p.name for p in tmp_path.iterdir()] == [".out.lock"]  # no temp file left
    with pytest.raises(FileExistsError):
        _create(fs, str(lock), {"pid": 8})
    lock.write_text("")  # what an exclusive open killed before its write left
    with pytest.raises(Exception, match="another run is writing it"):
        with output_lock(tmp_path / "out"):
            pass
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with output_lock(tmp_path / "out"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_finished_cache_holds_nothing_a_killed_writer_left(tiny_corpus, tiny_cache, tmp_path):
    """What a ``kill -9`` can leave inside a cache (the lock of a part it had just committed, a
    lock's temp file, a stage folder, a header temp) is removed when the cache is finished; a
    live writer's files, and another host's, are left alone."""
    import socket
    import time

    cache = _copy_cache(tiny_cache, tmp_path)
    before = _snapshot(cache)
    host, part = socket.gethostname(), read_header(cache).parts[0].name
    gone = dead_pid()
    owner = {"pid": gone, "host": host, "start": None, "since": "then", "beat": time.time()}
    parts = cache / "parts"
    (parts / f".{part}.lock").write_text(json.dumps(owner))
    (parts / f".{part}.lock.1.tmp-{host}-{gone}").write_text(json.dumps(owner))
    (parts / f".{part}.tmp-{host}-{gone}" / "logits").mkdir(parents=True)
    (cache / f".header.json.tmp-{host}-{gone}").write_text("{")
    live = {
        "parts/.other.lock": json.dumps({**owner, "pid": os.getpid()}),
        f"parts/.other.tmp-{host}-{os.getpid()}": "mine",
        f"parts/.{part}.tmp-another-machine-{gone}": "a job elsewhere",
    }
    for name, text in live.items():
        (cache / name).write_text(text)
    cache_teacher.run(section(tiny_params(), "cache_teacher", CacheTeacherConfig), tiny_corpus,
                      cache)  # fmt: skip
    after = _snapshot(cache)
    assert {k: v.decode() for k, v in after.items() if k not in before} == live
    assert all(after[k] == v for k, v in before.items())
