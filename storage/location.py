"""Where a cache lives: a local folder, or any fsspec URL (``s3://``, ``gs://``, ``memory://``,
``file://`` ...). Readers go through fsspec for both; writers build the cache in a local folder
(atomic renames, resumable parts) and :func:`upload` it, header last."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec

from pipeline.core.errors import OutputError
from pipeline.core.io import MARKER

HEADER = "header.json"


def is_url(path: str | Path) -> bool:
    return "://" in str(path)


def location(path: str | Path) -> str | Path:
    """``path`` as given for URLs (a ``Path`` would mangle ``s3://``), else a ``Path``."""
    return str(path) if is_url(path) else Path(path)


def filesystem(path: str | Path) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``path`` and the cache's root on it."""
    fs, root = fsspec.core.url_to_fs(str(path))
    return fs, root.rstrip("/")


def read_bytes(path: str | Path, name: str) -> bytes:
    """The bytes of file ``name`` inside the cache ``path``.

    Raises:
        FileNotFoundError: no such file.
    """
    fs, root = filesystem(path)
    return fs.cat_file(f"{root}/{name}")


def files(path: str | Path) -> dict[str, int]:
    """Every file under ``path`` (relative posix name -> size in bytes), sorted."""
    fs, root = filesystem(path)
    found = fs.find(root, detail=True) if fs.exists(root) else {}
    return {
        name[len(root) + 1 :]: int(info["size"])
        for name, info in sorted(found.items())
        if info.get("type", "file") == "file"
    }


def check_remote_replaceable(url: str) -> None:
    """Refuse to upload a cache over anything at ``url`` but an earlier cache (or nothing).

    Raises:
        OutputError: ``url`` holds data that is not a hubert-kd cache; nothing is touched.
    """
    fs, root = filesystem(url)
    if not fs.exists(root) or not fs.ls(root):
        return
    try:
        kind = json.loads(fs.cat_file(f"{root}/{MARKER}")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != "cache":
        raise OutputError(
            f"{url}: refusing to replace it: it is not a hubert-kd cache (no {MARKER}). Choose "
            "another output location, or remove that data yourself"
        )


def upload(local: Path, url: str) -> None:
    """Copy the committed cache folder ``local`` to ``url``: an existing cache there is first
    made unreadable (its header removed), then removed; data files go up before the header, so
    a reader never sees a header over missing data. Only an earlier cache is ever replaced."""
    check_remote_replaceable(url)
    fs, root = filesystem(url)
    if fs.exists(f"{root}/{HEADER}"):
        fs.rm_file(f"{root}/{HEADER}")
    if fs.exists(root):
        fs.rm(root, recursive=True)
    names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    for name in [n for n in names if n != HEADER] + [HEADER]:
        fs.makedirs(f"{root}/{name}".rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(local / name), f"{root}/{name}")
