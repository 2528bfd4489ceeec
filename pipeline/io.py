"""Small atomic file helpers: outputs never look complete before they are."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it replaces ``path``, on error it is removed.

    A reader never sees a half-built folder at ``path``: the old one (if any) stays in place
    until the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (
        *path.parent.glob(f".{path.name}.tmp-*"),
        *path.parent.glob(f".{path.name}.old-*"),
    ):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        path.replace(old)
    tmp.replace(path)
    shutil.rmtree(old, ignore_errors=True)
