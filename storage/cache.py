"""Writing a cache: parts committed one by one where the cache lives, then a header.

The commit protocol, the same for every backend and for local folders and fsspec URLs:

1. :func:`open_part` writes one part's utterances through the backend into a temp folder and
   commits it as ``parts/<name>/`` (a rename; for a URL, an upload with ``part.json`` last).
   It holds the part's lock meanwhile, so any number of jobs (processes, dask workers, SLURM
   array tasks on other machines) may write different parts of one cache at once.
2. :func:`finalize` lists the committed parts in a header written last. It reads each part's
   small ``part.json`` and never the data, so it costs O(parts), not O(bytes); the checksums
   it records were taken by the writers as they wrote.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.core import faults
from pipeline.core.errors import CacheFormatError, OutputError
from pipeline.core.hashing import sha256_bytes
from pipeline.core.io import MARKER, check_writable, write_marker
from pipeline.core.locks import clear_dead, output_lock, temp_suffix
from storage.base import BACKENDS, PartWriter
from storage.header import (
    CHECKSUMS,
    FITTED,
    FITTED_RECIPE,
    FRONTEND,
    HEADER,
    KEYS,
    PART,
    PARTS,
    CacheHeader,
    PartHeader,
    PartInfo,
    json_with_digest,
    part_location,
    read_with_digest,
)
from storage.location import filesystem, is_url

log = logging.getLogger(__name__)

KIND = "cache"


def prepare_location(path: str | Path) -> None:
    """Make ``path`` (a folder or URL) ready to hold a cache: absent, empty or already a cache.

    Raises:
        OutputError: it holds anything else (the user's data is never touched).
    """
    if not is_url(path):
        check_writable(path, KIND)
        Path(path).mkdir(parents=True, exist_ok=True)
        write_marker(Path(path), KIND)
        return
    fs, root = filesystem(path)
    if fs.exists(root) and fs.ls(root):
        try:
            kind = json.loads(fs.cat_file(f"{root}/{MARKER}")).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind != KIND:
            raise OutputError(
                f"{path}: refusing to write a cache there: it holds data that is not a hubert-kd "
                f"cache (no {MARKER}). Choose another location, or remove that data yourself"
            )
    fs.pipe_file(f"{root}/{MARKER}", json.dumps({"kind": KIND, "tool": "hubert-kd"}).encode())


def committed(path: str | Path, names: list[str]) -> set[str]:
    """Which of the parts ``names`` are committed at ``path``."""
    fs, root = filesystem(path)
    found = set(fs.glob(f"{root}/{PARTS}/*/{PART}")) if fs.exists(f"{root}/{PARTS}") else set()
    done = {p.rsplit("/", 2)[-2] for p in found}
    return {n for n in names if n in done}


class Part:
    """An open part: :meth:`write` utterances; ``info`` is set once it is committed."""

    def __init__(self, writer: PartWriter, name: str, folder: Path) -> None:
        self._writer = writer
        self.name = name
        self.folder = folder  # where it is written, until it is committed
        self.keys: list[str] = []
        self.info: PartInfo | None = None

    def write(self, key: str, arrays: dict) -> None:
        self._writer.write(key, arrays)
        self.keys.append(key)


@contextmanager
def open_part(path: str | Path, name: str, header: CacheHeader, backend_cfg) -> Iterator[Part]:
    """Write part ``name`` of the cache at ``path`` (folder or URL) and commit it on a clean exit;
    on an exception nothing is committed and the temp folder is removed.

    Raises:
        OutputError: another job is writing this part.
    """
    backend = BACKENDS[header.backend](backend_cfg)
    target = part_location(path, name)
    with output_lock(target):
        stage = _stage_folder(path, name)  # we hold the part's lock: older stages are leftovers
        try:
            with backend.writer(stage, header) as writer:
                part = Part(writer, name, stage)
                yield part
                frames, checksums = writer.close()
            index = {}
            for file, content in ((KEYS, part.keys), (CHECKSUMS, checksums)):
                data = json.dumps(content, sort_keys=True).encode()
                (stage / file).write_bytes(data)
                index[file] = sha256_bytes(data)
            doc = PartHeader(name, header.backend, len(part.keys), frames, index)
            data, digest = json_with_digest(doc)
            (stage / PART).write_bytes(data)
            _commit(stage, path, name)
            part.info = PartInfo(name, len(part.keys), frames, digest)
            faults.reached("part")
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _stage_folder(path: str | Path, name: str) -> Path:
    """A fresh temp folder for a part: beside its final place (local caches, so the commit is a
    rename) or under ``$HUBERT_KD_STAGING`` / the temp folder (URL caches, then uploaded)."""
    if is_url(path):
        base = Path(os.environ.get("HUBERT_KD_STAGING", tempfile.gettempdir())) / "hubert-kd"
        base /= hashlib.sha256(str(path).encode()).hexdigest()[:16]
    else:
        base = Path(path) / PARTS
    for leftover in base.glob(f".{name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    stage = base / f".{name}{temp_suffix()}"
    stage.mkdir(parents=True)
    return stage


def _commit(stage: Path, path: str | Path, name: str) -> None:
    if not is_url(path):
        final = Path(part_location(path, name))
        shutil.rmtree(final, ignore_errors=True)  # an uncommitted leftover (no part.json)
        stage.replace(final)
        return
    fs, root = filesystem(part_location(path, name))
    if fs.exists(root):
        fs.rm(root, recursive=True)
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    for rel in [f for f in files if f != PART] + [PART]:  # part.json last: the commit
        fs.makedirs(f"{root}/{rel}".rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(stage / rel), f"{root}/{rel}")


def finalize(
    path: str | Path,
    header: CacheHeader,
    names: list[str],
    frontend: bytes | None,
    written: dict[str, str] | None = None,
) -> CacheHeader:
    """Write the header of the cache at ``path`` listing parts ``names`` (in storage order),
    with the teacher's conv stack beside them and the checksums of the cache's other files
    already ``written`` (name -> sha256 taken as they were written: the fitted state); remove
    parts no longer listed. Reads only each part's ``part.json``. The caller holds the cache's
    lock.

    Raises:
        CacheFormatError: a part is not committed yet, or its ``part.json`` is damaged.
    """
    missing = sorted(set(names) - committed(path, names))
    if missing:
        raise CacheFormatError(
            f"{path}: {len(missing)} of {len(names)} parts are not committed yet "
            f"(e.g. {missing[0]}); run the missing shards, then finalize"
        )
    infos = []
    for name in names:  # each part.json is a few lines, whatever the part holds
        fs, root = filesystem(part_location(path, name))
        digest = json.loads(fs.cat_file(f"{root}/{PART}")).get("digest", "")
        part = read_with_digest(part_location(path, name), PART, PartHeader, expect_digest=digest)
        infos.append(PartInfo(name, part.num_utterances, part.num_frames, digest))
    fs, root = filesystem(path)
    checksums = dict(written or {})
    if frontend is not None:
        fs.pipe_file(f"{root}/{FRONTEND}", frontend)
        checksums[FRONTEND] = sha256_bytes(frontend)
    header = dataclasses.replace(
        header, parts=infos, checksums=checksums,
        num_utterances=sum(i.num_utterances for i in infos),
        num_frames=sum(i.num_frames for i in infos),
    )  # fmt: skip
    put_atomic(path, HEADER, json_with_digest(header)[0])
    for stale in {FITTED, FITTED_RECIPE} - set(checksums):  # fitted for an earlier setting
        if fs.exists(f"{root}/{stale}"):
            fs.rm_file(f"{root}/{stale}")
    prune(path, keep=names)
    return header


def put_atomic(path: str | Path, name: str, data: bytes) -> None:
    """Write file ``name`` of the cache at ``path`` whole: a temp file renamed into place
    locally, one object put at a URL."""
    if is_url(path):
        fs, root = filesystem(path)
        fs.pipe_file(f"{root}/{name}", data)
        return
    tmp = Path(path) / f".{name}{temp_suffix()}"
    tmp.write_bytes(data)
    tmp.replace(Path(path) / name)


def prune(path: str | Path, keep: list[str]) -> int:
    """Remove the parts of ``path`` not in ``keep`` (another teacher, corpus or settings) and
    what killed writers left (stale part locks, temp files and folders:
    :func:`~pipeline.core.locks.clear_dead`); returns the parts removed. A header that lists a
    removed part is removed first, so no reader sees a broken cache."""
    fs, root = filesystem(path)
    if not fs.exists(f"{root}/{PARTS}"):
        return 0
    wanted = set(keep)
    entries = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{root}/{PARTS}", detail=False)]
    stale = [e for e in entries if not e.startswith(".") and e not in wanted]
    if stale and fs.exists(f"{root}/{HEADER}"):
        listed = {p["name"] for p in json.loads(fs.cat_file(f"{root}/{HEADER}")).get("parts", [])}
        if listed & set(stale):
            fs.rm_file(f"{root}/{HEADER}")
    for entry in stale:
        fs.rm(f"{root}/{PARTS}/{entry}", recursive=True)
    if not is_url(path):
        for folder in (Path(path), Path(path, PARTS)):
            clear_dead(folder)
    if stale:
        log.info("removed %d parts of %s made for another plan", len(stale), path)
    return len(stale)
