"""One writer at a time: a second run is refused, naming the owner; a dead writer's lock, or one
silent past its lease on any host, is taken over."""

import json
import os

import pytest
from cli_runs import one_line_error, params_args, runner
from conftest import dead_pid

from cli.main import app
from pipeline.core.locks import output_lock
from storage import verify_cache


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tiny_corpus, tmp_path):
    args = [*params_args(tmp_path), "--manifest", str(tiny_corpus)]
    out = tmp_path / "cache"
    with output_lock(out):
        result = runner.invoke(app, ["cache-teacher", "--out", str(out), *args])
    one_line_error(result, "another run is writing it", f"pid {os.getpid()}")
    assert not out.exists()

    lock = tmp_path / ".cache.lock"
    lock.write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename, "start": None}))
    result = runner.invoke(app, ["cache-teacher", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    assert not lock.exists() and verify_cache(out) == []


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
