"""A user's data is never lost: an output folder is replaced only when it is this tool's own
(its marker lists what it wrote), a corpus inside an output of the run or of the DVC project
around it is refused before any work, and a cache upload never overwrites a URL holding other
data."""

import json
import shutil
from pathlib import Path

import pytest
from cli_runs import one_line_error, params_args, runner, snapshot, tone
from conftest import ROOT

from cli.main import app
from pipeline.core.errors import OutputError


def test_prepare_refuses_a_folder_holding_the_users_corpus(tmp_path):
    corpus = tmp_path / "mycorpus"
    for i in range(3):
        tone(corpus / "audio" / f"u{i}.wav")
    (corpus / "list.jsonl").write_text(
        "\n".join(json.dumps({"audio": f"audio/u{i}.wav"}) for i in range(3)) + "\n"
    )
    before = snapshot(corpus)

    def use_list(params):
        params["prepare"]["source"] = {"kind": "manifest", "path": str(corpus / "list.jsonl")}

    args = params_args(tmp_path, use_list)
    result = runner.invoke(app, ["prepare", "--out", str(corpus), *args])
    one_line_error(result, f"{corpus}/list.jsonl (prepare.source.path) is inside {corpus}")
    assert snapshot(corpus) == before
    (corpus / "list.jsonl").rename(tmp_path / "list.jsonl")  # the list outside, its audio not
    args = params_args(tmp_path, lambda p: p["prepare"].update(source={
        "kind": "manifest", "path": str(tmp_path / "list.jsonl")}))  # fmt: skip
    (tmp_path / "list.jsonl").write_text(
        "".join(json.dumps({"audio": str(corpus / "audio" / f"u{i}.wav")}) + "\n" for i in range(3))
    )
    result = runner.invoke(app, ["prepare", "--out", str(corpus), *args])
    one_line_error(result, str(corpus), "refusing to replace it", "not a hubert-kd output")
    assert snapshot(corpus) == {k: v for k, v in before.items() if k != "list.jsonl"}


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
    args = params_args(tmp_path, lambda p: p["prepare"].update(source=use))
    assert runner.invoke(app, ["prepare", "--out", str(data), *args]).exit_code == 0
    written = json.loads((data / MARKER).read_text())["files"]
    assert sorted(written) == ["manifest.jsonl", "summary.json"]

    shutil.copytree(kaldi, data / "train")
    before = snapshot(data)
    inside = params_args(tmp_path, lambda p: p["prepare"].update(source={**use, "dir": str(
        data / "train")}))  # fmt: skip
    result = runner.invoke(app, ["prepare", "--out", str(data), *inside])
    one_line_error(result, f"{data}/train (prepare.source.dir) is inside {data}, the folder "
                    "this run writes (--out): move it out of there (e.g. to corpora/)")  # fmt: skip
    assert snapshot(data) == before
    args = params_args(tmp_path, lambda p: p["prepare"].update(source=use))  # the corpus elsewhere
    result = runner.invoke(app, ["prepare", "--out", str(data), *args])
    one_line_error(result, f"{data}: refusing to replace it: {data}/train/ was not written by "
                    "the earlier corpus output there. Move it out of")  # fmt: skip
    assert snapshot(data) == before

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
        tone(project / folder / "u0.wav")
        listing.write_text(json.dumps({"audio": "u0.wav"}) + "\n")
        args = params_args(tmp_path, lambda p, path=listing: p["prepare"].update(
            source={"kind": "manifest", "path": str(path)}))  # fmt: skip
        result = runner.invoke(app, ["prepare", "--out", str(tmp_path / "out"), *args])
        one_line_error(result, f"{listing} (prepare.source.path) is inside {project}/"
                        f"{folder.split('/')[0] if stage == 'export' else folder}, an output of "
                        f"stage {stage!r} in {project}/dvc.yaml")  # fmt: skip
    beside = project / "students" / "corpus" / "list.jsonl"
    tone(project / "corpora" / "u0.wav")
    beside.parent.mkdir(parents=True)
    beside.write_text(json.dumps({"audio": str(project / "corpora" / "u0.wav")}) + "\n")
    use = {"kind": "manifest", "path": str(beside)}
    args = params_args(tmp_path, lambda p: p["prepare"].update(source=use))
    assert runner.invoke(app, ["prepare", "--out", str(tmp_path / "out"), *args]).exit_code == 0
    (project / "dvc.yaml").write_text("stages:\n  prepare: {cmd: x\n")
    result = runner.invoke(app, ["prepare", "--out", str(tmp_path / "out"), *args])
    one_line_error(result, f"{project}/dvc.yaml:3:1: not valid YAML", code=2)


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

    from pipeline.core.outputs import dvc_outputs

    prepare = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["prepare"]
    assert prepare["outs"] == [{"data": {"persist": True}}]
    declared = dvc_outputs(ROOT)
    assert {("prepare", "data"), ("cache_teacher", "cache"), ("export@kd", "exports/kd"),
            ("train@kd", "students/kd/model.pt")} <= set(declared)  # fmt: skip


def test_cache_teacher_refuses_the_corpus_folder_but_replaces_its_own_cache(tiny_corpus, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_corpus.parent, data)
    before = snapshot(data)
    args = [*params_args(tmp_path), "--manifest", str(data / "manifest.jsonl")]
    result = runner.invoke(app, ["cache-teacher", "--out", str(data), *args])
    one_line_error(result, str(data), "hubert-kd corpus output")
    assert snapshot(data) == before
    for _ in range(2):  # an earlier cache is ours to replace
        result = runner.invoke(app, ["cache-teacher", "--out", str(tmp_path / "cache"), *args])
        assert result.exit_code == 0, result.output


def test_upload_refuses_a_url_holding_other_data(tiny_corpus, tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/safety-test/results/notes.txt", b"precious")
    args = [*params_args(tmp_path), "--manifest", str(tiny_corpus)]
    result = runner.invoke(app, ["cache-teacher", "--out", "memory://safety-test/results", *args])
    one_line_error(result, "memory://safety-test/results", "not a hubert-kd cache")
    assert fs.cat_file("/safety-test/results/notes.txt") == b"precious"
    fs.rm("/safety-test", recursive=True)
