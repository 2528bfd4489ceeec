"""What passes prepare is usable by every later stage: clips shorter than one teacher frame are
refused or skipped, and a bad row of a user's list is named by its line."""

import json

import pytest
from cli_runs import one_line_error, runner, tone
from conftest import tiny_params, write_params

from cli.main import app


def _listing(tmp_path, rows) -> list[str]:
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    params = tiny_params()
    params["prepare"].update(max_bad_fraction=0.5)
    params["prepare"]["source"] = {"kind": "manifest", "path": str(tmp_path / "list.jsonl")}
    write_params(tmp_path / "params.yaml", params)
    return ["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "data")]


def test_prepare_rejects_or_skips_clips_shorter_than_one_frame(tmp_path):
    rows = [{"audio": str(tone(tmp_path / f"ok{i}.wav"))} for i in range(3)]
    rows.append({"audio": str(tone(tmp_path / "short.wav", samples=399))})
    args = _listing(tmp_path, rows)
    result = runner.invoke(app, ["prepare", *args])
    one_line_error(result, "short.wav: 399 samples at 16 kHz, shorter than one teacher frame")
    result = runner.invoke(app, ["prepare", "--skip-bad", *args])
    assert result.exit_code == 0 and "'skipped': 1" in result.output, result.output


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
    one_line_error(runner.invoke(app, ["prepare", *args]), needle)


def test_non_utf8_lists_and_short_tsv_rows_are_named(tmp_path):
    args = _listing(tmp_path, [])
    (tmp_path / "list.jsonl").write_bytes(b'{"audio": "caf\xe9.wav"}\n')
    one_line_error(runner.invoke(app, ["prepare", *args]), "list.jsonl:1: not UTF-8 text")
    wav = tone(tmp_path / "a.wav")
    (tmp_path / "list.tsv").write_text(f"audio\ttranscript\n{wav}\n")
    params = json.loads(json.dumps(tiny_params()))
    params["prepare"]["source"] = {"kind": "manifest", "path": str(tmp_path / "list.tsv")}
    write_params(tmp_path / "params.yaml", params)
    result = runner.invoke(app, ["prepare", *args])
    one_line_error(result, "list.tsv:2: 1 columns where the header names 2")
