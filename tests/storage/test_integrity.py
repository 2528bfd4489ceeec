"""A cache is never used damaged: checksums of the bytes written, training stops on a damaged
or missing chunk or shard and on an edited header, naming it; a finished cache holds nothing
a killed writer left; the documented WebDataset recipe never unpickles."""

import json
import os
import pickle
import tarfile
from pathlib import Path

import pytest
from cli_runs import copy_cache, one_line_error, params_args, runner, snapshot, train_kd
from conftest import ROOT, dead_pid, store, tiny_params

from cli.main import app
from pipeline.core.config import section
from pipeline.teacher.caching import CacheTeacherConfig
from stages import cache_teacher
from storage import read_header, verify_cache
from storage.header import HEADER
from storage.header import json_digest as header_digest


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


def _chunk(cache: Path) -> Path:
    return sorted(p for p in cache.glob("parts/*/logits/c/**/*") if p.is_file())[0]


@pytest.mark.parametrize("damage", ["flip", "delete", "truncate"])
def test_training_stops_on_a_damaged_zarr_chunk_naming_it(
    tiny_corpus, tiny_cache, tmp_path, damage
):
    cache = copy_cache(tiny_cache, tmp_path)
    chunk = _chunk(cache)
    data = bytearray(chunk.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        chunk.write_bytes(bytes(data))
    elif damage == "delete":
        chunk.unlink()
    else:
        chunk.write_bytes(bytes(data[: len(data) // 2]))
    result = train_kd(tmp_path, tiny_corpus, cache)
    name = chunk.relative_to(cache).as_posix()
    one_line_error(result, name, "missing" if damage == "delete" else "checksum mismatch")
    assert not (tmp_path / "kd" / "model.pt").exists()


def test_training_stops_on_a_damaged_webdataset_shard(tiny_corpus, tmp_path):
    args = [*params_args(tmp_path, lambda p: store(p, backend="webdataset"))]
    result = runner.invoke(
        app, ["cache-teacher", "--out", str(tmp_path / "c"), "--manifest", str(tiny_corpus), *args]
    )
    assert result.exit_code == 0, result.output
    shard = sorted((tmp_path / "c").glob("parts/*/cache-000000.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[-2048] ^= 0x01  # inside the last member's data: the tar still parses
    shard.write_bytes(bytes(data))
    result = train_kd(tmp_path, tiny_corpus, tmp_path / "c")
    one_line_error(result, "cache-000000.tar: checksum mismatch")
    shard.unlink()
    result = train_kd(tmp_path, tiny_corpus, tmp_path / "c")
    one_line_error(result, "cache-000000.tar: missing")


def test_an_edited_header_fails_verification_and_training(tiny_corpus, tiny_cache, tmp_path):
    cache = copy_cache(tiny_cache, tmp_path)
    raw = json.loads((cache / HEADER).read_text())
    fingerprint = "0" * 64
    raw.update(teacher="hf:facebook/hubert-large-ll60k", fingerprint=fingerprint)
    (cache / HEADER).write_text(json.dumps(raw))
    result = runner.invoke(app, ["cache-verify", str(cache)])
    one_line_error(result, "header.json: the header was edited or damaged")
    result = train_kd(tmp_path, tiny_corpus, cache)
    one_line_error(result, "header.json: the header was edited or damaged")


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
    cache = copy_cache(tiny_cache, tmp_path)
    _resign(cache, edit)
    for command in ("cache-info", "cache-verify"):
        one_line_error(runner.invoke(app, [command, str(cache)]), needle)


def test_a_missing_webdataset_tar_is_named(tiny_corpus, tmp_path):
    args = [*params_args(tmp_path, lambda p: store(p, backend="webdataset", shard_utterances=4))]
    cmd = ["cache-teacher", "--out", str(tmp_path / "c"), "--manifest", str(tiny_corpus), *args]
    assert runner.invoke(app, cmd).exit_code == 0
    victim = sorted((tmp_path / "c").glob("parts/*/cache-*.tar"))[-1]
    victim.unlink()
    result = train_kd(tmp_path, tiny_corpus, tmp_path / "c")
    one_line_error(result, f"{victim.name}: missing")


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
    docs = (ROOT / "docs" / "cache.md").read_text()  # what users copy
    assert ".map(decode_sample)" in docs and "shardshuffle=False).decode()" not in docs


def test_header_of_a_fresh_cache_verifies(tiny_cache):
    assert verify_cache(tiny_cache) == [] and read_header(tiny_cache).checksums


def test_a_finished_cache_holds_nothing_a_killed_writer_left(tiny_corpus, tiny_cache, tmp_path):
    """What a ``kill -9`` can leave inside a cache (the lock of a part it had just committed, a
    lock's temp file, a stage folder, a header temp) is removed when the cache is finished; a
    live writer's files, and another host's, are left alone."""
    import socket
    import time

    cache = copy_cache(tiny_cache, tmp_path)
    before = snapshot(cache)
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
    after = snapshot(cache)
    assert {k: v.decode() for k, v in after.items() if k not in before} == live
    assert all(after[k] == v for k, v in before.items())
