"""Safe outputs: atomic files and folders, and ownership markers.

Three rules keep a user's data safe:

- **Atomic**: an output appears complete or not at all (temp name, then rename).
- **Owned**: a folder is only ever replaced when it is this tool's own output of the same kind,
  recognised by the marker file it wrote (:data:`MARKER`); anything else at ``--out`` is
  refused untouched.
- **One writer**: :func:`pipeline.core.locks.output_lock`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.core.errors import OutputError
from pipeline.core.locks import temp_suffix

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


def marker_kind(path: str | Path) -> str | None:
    """The kind of hubert-kd output ``path`` holds, from its marker; None if it has none."""
    try:
        return json.loads((Path(path) / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def check_replaceable(path: str | Path, kind: str) -> None:
    """Refuse to let an output of ``kind`` replace ``path`` unless ``path`` is absent, an empty
    folder, or this tool's own output of the same kind.

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


def write_marker(folder: Path, kind: str) -> None:
    (Path(folder) / MARKER).write_text(json.dumps({"kind": kind, "tool": "hubert-kd"}) + "\n")


@contextmanager
def atomic_dir(path: str | Path, kind: str) -> Iterator[Path]:
    """Yield a temp folder (marked as an output of ``kind``) beside ``path``; on success it
    replaces ``path``, on error it is removed.

    A reader never sees a half-built folder at ``path``: the old one (if any) stays in place
    until the new one is complete. Only an absent path, an empty folder or a previous output of
    the same ``kind`` is replaced (:func:`check_replaceable`); callers hold the output's lock
    (``pipeline.core.locks``).
    """
    path = Path(path)
    check_replaceable(path, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (
        *path.parent.glob(f".{path.name}.tmp-*"),
        *path.parent.glob(f".{path.name}.old-*"),
    ):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run (we hold the lock)
    tmp = path.with_name(f".{path.name}{temp_suffix()}")
    tmp.mkdir()
    write_marker(tmp, kind)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    check_replaceable(path, kind)
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        path.replace(old)
    tmp.replace(path)
    shutil.rmtree(old, ignore_errors=True)
