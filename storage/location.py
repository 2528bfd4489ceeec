"""Where a cache lives: a local folder, or any fsspec URL (``s3://``, ``gs://``, ``memory://``,
``file://`` ...). Readers and writers go through fsspec for both."""

from __future__ import annotations

from pathlib import Path

import fsspec


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
