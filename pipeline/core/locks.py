"""One writer at a time: a lock file beside each output, with a lease.

The lock is created exclusively (``O_EXCL`` locally, ``xb`` through fsspec) and holds its
owner's pid, host, process start time and a heartbeat that a thread renews while the lock is
held. A second writer is refused, naming the owner. A lock is taken over when its owner is
known to be gone: a dead process on this host, or (on any host, e.g. a killed cluster job on a
shared filesystem) a heartbeat older than the lease (``HUBERT_KD_LOCK_LEASE`` seconds, 600 by
default).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.core.errors import OutputError


def lease_seconds() -> float:
    return float(os.environ.get("HUBERT_KD_LOCK_LEASE", "600"))


def _process_start(pid: int) -> str | None:
    """A token that changes when ``pid`` is reused (Linux: its start time); None elsewhere."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def temp_suffix() -> str:
    """The suffix of this process's temp files and folders, ``.tmp-<host>-<pid>``: whoever
    finds one later can tell whether its writer is gone (:func:`clear_dead`)."""
    return f".tmp-{socket.gethostname()}-{os.getpid()}"


def _writer_gone(name: str) -> bool:
    """Whether the writer of temp ``name`` (ending in :func:`temp_suffix`) is known to be gone:
    a process of this host that no longer runs. Another host's temp is never judged."""
    host, _, pid = name.rpartition(".tmp-")[2].rpartition("-")
    return host == socket.gethostname() and pid.isdigit() and not _running(int(pid))


def _running(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "start": _process_start(pid),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "beat": time.time()}  # fmt: skip


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the lock's owner may still run: not if its heartbeat is older than the lease,
    nor if it is a process of this host that is gone."""
    beat = owner.get("beat")
    if isinstance(beat, (int, float)) and time.time() - beat > lease_seconds():
        return False
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return True
    if not _running(pid):
        return False
    return owner.get("start") is None or owner.get("start") == _process_start(pid)


def lock_path(path: str | Path) -> str:
    """The lock file of output ``path`` (a local path or fsspec URL): ``.<name>.lock`` beside it."""
    text = str(path).rstrip("/")
    parent, _, name = text.rpartition("/")
    return f"{parent}/.{name}.lock" if parent else f".{name}.lock"


def _read(fs, lock: str) -> dict[str, Any] | None:
    """The owner recorded in ``lock``; None if it cannot be read (being rewritten, damaged)."""
    try:
        owner = json.loads(fs.cat_file(lock))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _local(fs) -> bool:
    return fs.protocol in ("file", "local") or "file" in getattr(fs, "protocol", ())


def _create(fs, lock: str, owner: dict[str, Any]) -> None:
    """Create ``lock`` already holding ``owner``, or raise FileExistsError. Locally the content
    is written to a temp file first and hard-linked into place, so a run killed at any moment
    never leaves an empty lock that names no owner (an object store writes an object whole)."""
    data = json.dumps(owner).encode()
    if _local(fs):
        tmp = f"{lock}.{threading.get_ident()}{temp_suffix()}"
        Path(tmp).write_bytes(data)
        try:
            os.link(tmp, lock)
            return
        except FileExistsError:
            raise
        except OSError:
            pass  # a filesystem without hard links: the exclusive open below
        finally:
            Path(tmp).unlink(missing_ok=True)
    with fs.open(lock, "xb") as f:
        f.write(data)


def _write(fs, lock: str, owner: dict[str, Any]) -> None:
    """Rewrite the lock whole (a rename locally), so a reader never sees half of it."""
    data = json.dumps(owner).encode()
    if _local(fs):
        tmp = f"{lock}{temp_suffix()}"
        Path(tmp).write_bytes(data)
        os.replace(tmp, lock)
    else:
        fs.pipe_file(lock, data)


def _stale(fs, lock: str, owner: dict[str, Any] | None) -> bool:
    """Whether ``lock`` may be taken over: its owner is gone, or it names no owner (damaged)
    and has not changed for longer than the lease."""
    if owner is not None:
        return not _alive(owner)
    try:
        modified = fs.modified(lock).timestamp()
    except (OSError, NotImplementedError, AttributeError):
        return False
    return time.time() - modified > lease_seconds()


def clear_dead(folder: str | Path) -> list[str]:
    """Remove from local ``folder`` what killed writers left: locks whose owner is gone, and
    temp files and folders (:func:`temp_suffix`) of processes of this host that are gone.
    Returns the names removed. A live writer's lock or temp is never touched."""
    import fsspec

    fs = fsspec.filesystem("file")
    removed = []
    for entry in sorted(Path(folder).glob(".*")):
        if entry.name.endswith(".lock"):
            owner = _read(fs, str(entry))
            if not _abandoned(fs, str(entry), owner):
                continue
            entry.unlink(missing_ok=True)
        elif ".tmp-" in entry.name and _writer_gone(entry.name):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        else:
            continue
        removed.append(entry.name)
    return removed


def _abandoned(fs, lock: str, owner: dict[str, Any] | None) -> bool:
    """Whether ``lock``, read as ``owner``, may be removed: its writer is gone (killed, or
    silent past its lease) and no other run has taken it over since it was read. Two runs can
    still both take it over within one read; storage without compare-and-swap cannot close
    that."""
    return _stale(fs, lock, owner) and _read(fs, lock) == owner


def _mine(owner: dict[str, Any] | None, me: dict[str, Any]) -> bool:
    return owner is not None and all(owner.get(k) == me[k] for k in ("pid", "host", "start"))


@contextmanager
def output_lock(path: str | Path) -> Iterator[None]:
    """Hold the one-writer lock of output ``path`` (a folder, file or fsspec URL).

    Raises:
        OutputError: another run holds the lock (named, with how to clear a stale one).
    """
    import fsspec

    fs, lock = fsspec.core.url_to_fs(lock_path(path))
    fs.makedirs(lock.rsplit("/", 1)[0] or "/", exist_ok=True)
    me = _owner()
    for attempt in range(2):
        try:
            _create(fs, lock, me)
            break
        except FileExistsError:
            owner = _read(fs, lock)
            if attempt == 0 and _abandoned(fs, lock, owner):
                fs.rm_file(lock)
                continue
            owner = owner or {}
            who = f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('since')}"
            raise OutputError(
                f"{path}: another run is writing it ({who}; lock {lock_path(path)}). Wait for "
                f"it to finish; a lock whose run is gone is taken over after "
                f"{lease_seconds():.0f} s, or delete the lock file once you know it is gone"
            ) from None
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(lease_seconds() / 4):
            if _mine(_read(fs, lock), me):
                _write(fs, lock, {**me, "beat": time.time()})

    beating = threading.Thread(target=heartbeat, daemon=True, name="lock heartbeat")
    beating.start()
    try:
        yield
    finally:
        stop.set()
        beating.join()
        try:
            if _mine(_read(fs, lock), me):
                fs.rm_file(lock)
        except FileNotFoundError:
            pass
