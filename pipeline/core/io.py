"""Safe outputs: atomic files and folders, and ownership markers.

Three rules keep a user's data safe:

- **Atomic**: an output appears complete or not at all (temp name, then rename).
- **Owned**: a folder is only ever replaced when it is this tool's own output of the same kind,
  recognised by the marker file it wrote (:data:`MARKER`), which lists the files it wrote;
  a folder holding anything else (a user's corpus put inside it) is refused untouched, and
  replacing removes only the files listed.
- **One writer**: :func:`pipeline.core.locks.output_lock`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.core.errors import OutputError
from pipeline.core.locks import temp_suffix

log = logging.getLogger(__name__)

MARKER = ".hubert-kd.json"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{temp_suffix()}")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp name beside ``path`` (same suffix, so writers that infer the format from it
    still work) to write to; on success it is renamed to ``path``, on error removed. A killed
    writer's temp is overwritten by the next one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def marker(path: str | Path) -> dict:
    """The marker of the hubert-kd output ``path`` holds ({} if it has none): its ``kind``
    and, where it was replaced whole (:func:`atomic_dir`), the ``files`` it wrote."""
    try:
        found = json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def marker_kind(path: str | Path) -> str | None:
    """The kind of hubert-kd output ``path`` holds, from its marker; None if it has none."""
    return marker(path).get("kind")


def check_writable(path: str | Path, kind: str) -> None:
    """Refuse to write an output of ``kind`` into ``path`` unless ``path`` is absent, an empty
    folder, or this tool's own output of the same kind (a cache, written in place, which
    removes only the parts it names).

    Raises:
        OutputError: naming the folder and what to do; nothing is touched.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder; choose another output path")
    if not any(path.iterdir()) or marker_kind(path) == kind:
        return
    found = marker_kind(path)
    what = f"a hubert-kd {found} output" if found else f"not a hubert-kd output (no {MARKER})"
    raise OutputError(
        f"{path}: refusing to replace it: it is {what}, and this writes a {kind}. Choose another "
        "output path, or move that folder away yourself"
    )


def check_replaceable(path: str | Path, kind: str, files: list[str] | None = None) -> None:
    """Refuse to replace folder ``path`` whole with an output of ``kind`` unless it is absent,
    empty, or an earlier output of ``kind`` holding nothing but the files its marker lists
    as written. A marker of an earlier version lists none: then the new output's ``files``
    stand in (each old file is rewritten under its name), and without them (before the new
    output exists) the check waits for the one :func:`atomic_dir` makes at the end.

    Raises:
        OutputError: one line naming the folder, a file in it that the earlier output did
            not write, and what to do; nothing is touched.
    """
    check_writable(path, kind)
    path = Path(path)
    recorded = marker(path).get("files", files) if path.is_dir() else []
    if recorded is None:
        return
    foreign = _outermost(sorted(set(written(path)) - set(recorded)))
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise OutputError(
            f"{path}: refusing to replace it: {path}/{foreign[0]}{more} was not written by the "
            f"earlier {kind} output there. Move it out of {path} (a corpus to e.g. corpora/), "
            "or choose another output path"
        )


def _outermost(names: list[str]) -> list[str]:
    """Sorted ``names`` (folders ending in ``/``) less those inside a folder among them (which
    follow it in sorted order)."""
    out: list[str] = []
    for name in names:
        if not (out and out[-1].endswith("/") and name.startswith(out[-1])):
            out.append(name)
    return out


def written(folder: Path) -> list[str]:
    """Every file and folder below ``folder`` (folders with a trailing ``/``, symlinks as
    files, never followed), relative, in POSIX form, less the marker."""
    out = []
    for root, dirs, files in os.walk(folder):
        base = Path(root).relative_to(folder)
        for name in dirs:
            is_link = Path(root, name).is_symlink()
            out.append((base / name).as_posix() + ("" if is_link else "/"))
        out += [(base / name).as_posix() for name in files]
    return [name for name in out if name != MARKER]


def write_marker(folder: Path, kind: str, files: list[str] | None = None) -> None:
    """Mark ``folder`` as an output of ``kind``, listing the ``files`` it wrote (if known)."""
    doc = {"kind": kind, "tool": "hubert-kd", **({"files": files} if files is not None else {})}
    (Path(folder) / MARKER).write_text(json.dumps(doc) + "\n")


def remove_written(folder: Path, files: list[str] | None = None) -> None:
    """Remove from ``folder`` (an earlier output) the files and folders its marker lists (or,
    if it lists none, ``files``), then the marker and ``folder`` itself if nothing is left;
    anything else stays, with a warning. Without a list: a temp folder of this tool, or an
    earlier version's output already checked to hold only what its successor rewrote,
    removed whole."""
    files = marker(folder).get("files", files)
    if files is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in sorted(files, reverse=True):  # a folder's files before the folder
        target = folder / name
        with contextlib.suppress(OSError):  # gone, or no longer what it wrote: it stays
            target.rmdir() if name.endswith("/") else target.unlink()
    (folder / MARKER).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        log.warning("kept %s: it holds %s, which the output did not write", folder,
                    ", ".join(written(folder)[:3]))  # fmt: skip


@contextmanager
def atomic_dir(path: str | Path, kind: str) -> Iterator[Path]:
    """Yield a temp folder (marked as an output of ``kind``) beside ``path``; on success it
    replaces ``path``, on error it is removed.

    A reader never sees a half-built folder at ``path``: the old one (if any) stays in place
    until the new one is complete. Only an absent path, an empty folder or a previous output of
    the same ``kind`` holding only the files it wrote is replaced (:func:`check_replaceable`),
    and of the old folder only those files are removed (:func:`remove_written`): the new
    folder's marker lists what it wrote. Callers hold the output's lock
    (``pipeline.core.locks``).
    """
    path = Path(path)
    check_replaceable(path, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (
        *path.parent.glob(f".{path.name}.tmp-*"),
        *path.parent.glob(f".{path.name}.old-*"),
    ):
        remove_written(stale)  # left by a killed run (we hold the lock)
    tmp = path.with_name(f".{path.name}{temp_suffix()}")
    tmp.mkdir()
    write_marker(tmp, kind)
    try:
        yield tmp
        files = written(tmp)
        write_marker(tmp, kind, files)
        check_replaceable(path, kind, files)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        path.replace(old)
    tmp.replace(path)
    if old.exists():
        remove_written(old, files)
