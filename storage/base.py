"""The teacher cache contract: header, Writer/Reader protocol, backend registry.

A cache is a folder. ``header.json`` is written last and marks the cache complete; a folder
without it (or with an unknown schema version) is never read as a cache.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.core.config import from_dict
from pipeline.core.errors import CacheFormatError, ConfigError
from pipeline.core.io import MARKER, atomic_write_text
from pipeline.core.registry import Registry
from storage.codecs import codec_from_header, decode_feature, feature_fields, field_bytes
from storage.integrity import check_bytes, sha256_bytes, sha256_stream
from storage.location import HEADER, files, filesystem, location, read_bytes

SCHEMA_VERSION = 4
FRONTEND = "frontend.safetensors"

BACKENDS: Registry = Registry("cache backend")


@dataclass(frozen=True)
class CacheHeader:
    """What a cache holds and where it came from.

    Attributes:
        schema_version: layout version of the cache (readers refuse others).
        backend: registered backend name that wrote it.
        teacher: human-readable teacher provenance.
        fingerprint: sha256 of the teacher's weights and head.
        corpus: sha256 of the manifest the teacher ran over.
        num_classes: C.
        frame_rate: frames per second of the logits (50.0 for HuBERT).
        frame_kernels: conv kernels of the teacher's frame stack (students must match).
        frame_strides: conv strides of the teacher's frame stack.
        codec: how logits are stored, e.g. ``{"name": "full", "dtype": "float16"}`` or
            ``{"name": "topk", "k": 64, "value_dtype": "float16"}`` (see ``storage.codecs``).
        target_source: how per-frame targets were made (``argmax`` of the teacher's logits).
        num_utterances: utterances in the cache.
        num_frames: frames in the cache.
        checksums: sha256 of every data file, by path relative to the cache folder.
        frontend: the teacher's conv stack (``pipeline.teacher.conv.frontend_spec``), whose weights
            are in ``frontend.safetensors``, so students can start from them; None if absent.
        features: teacher features stored per frame beside the logits, by name (``conv``: the
            conv stack's output; ``layer_<i>``: Transformer layer i, 0 = its input), each
            ``{"dim": D, "encoding": "float16" | "int8"}`` (see ``storage.codecs``).
    """

    schema_version: int
    backend: str
    teacher: str
    fingerprint: str
    corpus: str
    num_classes: int
    frame_rate: float
    frame_kernels: list[int]
    frame_strides: list[int]
    codec: dict[str, Any]
    target_source: str
    num_utterances: int
    num_frames: int
    checksums: dict[str, str] = dataclasses.field(default_factory=dict)
    frontend: dict[str, Any] | None = None
    features: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def fields(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-frame fields stored for each utterance: name -> (shape after frames, dtype)."""
        codec = codec_from_header(self.codec)
        fields = {"targets": ((), "int32"), **codec.fields(self.num_classes)}
        for name, spec in self.features.items():
            fields.update(feature_fields(name, spec["dim"], spec["encoding"]))
        return fields

    def bytes_per_frame(self) -> int:
        """Uncompressed bytes per frame (targets + encoded logits + features)."""
        return field_bytes(self.fields())

    def decode(self, fields: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Stored fields -> ``(logits (n, C) float32, targets (n,) int64)``."""
        logits = codec_from_header(self.codec).decode(fields, self.num_classes)
        return logits, fields["targets"].astype(np.int64)

    def decode_features(self, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Stored fields -> each cached teacher feature ``(n, D)`` float32."""
        return {
            name: decode_feature(name, fields, spec["encoding"])
            for name, spec in self.features.items()
        }


def header_digest(fields: dict[str, Any]) -> str:
    """sha256 of a header's fields (all but ``digest``) as canonical JSON."""
    body = {k: v for k, v in fields.items() if k != "digest"}
    return sha256_bytes(json.dumps(body, sort_keys=True).encode())


def write_header(root: Path, header: CacheHeader) -> None:
    """Write ``root/header.json`` atomically, with the digest that covers every other field."""
    fields = header.to_json()
    atomic_write_text(
        Path(root) / HEADER,
        json.dumps({**fields, "digest": header_digest(fields)}, indent=2, sort_keys=True) + "\n",
    )


def read_header(path: str | Path) -> CacheHeader:
    """Read and check ``path/header.json`` (``path`` a folder or an fsspec URL): its schema
    version, its digest (any edit of the header is caught) and the type of every field.

    Raises:
        CacheFormatError: missing header (incomplete cache), bad JSON, unknown schema, an edited
            or damaged header.
    """
    file = f"{path}/{HEADER}"
    try:
        raw = json.loads(read_bytes(path, HEADER))
    except FileNotFoundError as err:
        raise CacheFormatError(
            f"{path}: no {HEADER}; not a cache, or an incomplete one (rerun cache-teacher)"
        ) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CacheFormatError(f"{file}: damaged header ({err})") from err
    if not isinstance(raw, dict):
        raise CacheFormatError(f"{file}: damaged header (a JSON object expected)")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CacheFormatError(
            f"{file}: cache schema version {version!r}, this hubert-kd reads {SCHEMA_VERSION}; "
            "rerun cache-teacher"
        )
    if raw.get("digest") != header_digest(raw):
        raise CacheFormatError(
            f"{file}: the header was edited or damaged (its digest does not match its fields); "
            "rerun cache-teacher"
        )
    try:
        return from_dict(CacheHeader, {k: v for k, v in raw.items() if k != "digest"}, where=file)
    except ConfigError as err:
        raise CacheFormatError(f"damaged header: {err}") from err


class Writer(Protocol):
    """Writes one cache; nothing is readable before :meth:`close` commits it."""

    name: str

    def write(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Add utterance ``key`` with every field of ``header.fields()``, each ``(n, ...)``."""

    def close(self) -> CacheHeader:
        """Finish and commit the cache; returns the final header."""

    def __enter__(self) -> Writer: ...

    def __exit__(self, *exc: object) -> None: ...


class Reader(Protocol):
    """Random access to a committed cache."""

    header: CacheHeader

    def keys(self) -> list[str]:
        """Utterance ids in storage order."""

    def num_frames(self, key: str) -> int:
        """Frames stored for ``key``."""

    def read(self, key: str, frames: slice | None = None) -> dict[str, np.ndarray]:
        """The stored fields of ``key`` (optionally a frame slice); decode with
        ``header.decode``."""

    def blocks(self) -> list[list[str]]:
        """Utterance ids grouped in storage units that are cheap to read together (a chunk
        run, a tar shard): the unit of streaming and of splitting work across readers."""

    def read_block(self, block: list[str]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """``(key, fields)`` for every utterance of one of :meth:`blocks`."""


def check_utterance(
    fields: dict[str, tuple[tuple[int, ...], str]], seen: set[str], key: str, arrays: dict
) -> int:
    """Validate one utterance handed to a writer (all fields, consistent frames, a new key
    without dots) and record its key; returns its frame count."""
    n = len(arrays.get("targets", ()))
    expected = {name: (n, *shape) for name, (shape, _) in fields.items()}
    got = {name: getattr(arrays.get(name), "shape", None) for name in fields}
    if got != expected or n == 0 or set(arrays) != set(fields):
        raise ValueError(f"{key}: expected fields {expected} with n > 0, got {got}")
    if "." in key or key in seen:
        raise ValueError(f"{key}: written twice, or holds a dot (not a valid utterance id)")
    seen.add(key)
    return n


def open_cache(path: str | Path) -> Reader:
    """Open a committed cache (a folder or an fsspec URL) with the backend its header names."""
    path = location(path)
    header = read_header(path)
    return BACKENDS[header.backend].reader(path, header)


def verify_cache(path: str | Path) -> list[str]:
    """Problems found in a committed cache (empty when sound): an edited header, files missing,
    added or damaged, each named by its path. ``path`` may be an fsspec URL.

    Raises:
        CacheFormatError: no readable header (then nothing else can be checked).
    """
    header = read_header(path)
    found = set(files(path)) - {HEADER, MARKER}
    problems = [f"{name}: missing" for name in sorted(set(header.checksums) - found)]
    problems += [
        f"{name}: not listed in the header" for name in sorted(found - set(header.checksums))
    ]
    fs, root = filesystem(path)
    for name, expected in sorted(header.checksums.items()):
        if name not in found:
            continue
        with fs.open(f"{root}/{name}", "rb") as f:
            digest = sha256_stream(f)
        if digest != expected:
            problems.append(f"{name}: checksum mismatch (damaged or changed)")
    return problems


def cache_summary(path: str | Path) -> dict[str, Any]:
    """What a committed cache holds, for ``pipeline cache-info``."""
    header = read_header(path)
    on_disk = sum(size for name, size in files(path).items() if name not in (HEADER, MARKER))
    fp32 = header.num_frames * header.num_classes * 4
    return {
        "path": str(path),
        "backend": header.backend,
        "utterances": header.num_utterances,
        "frames": header.num_frames,
        "hours": round(header.num_frames / header.frame_rate / 3600, 4),
        "classes": header.num_classes,
        "codec": header.codec,
        "bytes/frame (encoded)": header.bytes_per_frame(),
        "bytes/frame (on disk)": round(on_disk / max(header.num_frames, 1), 1),
        "fp32 logits / on disk": round(fp32 / max(on_disk, 1), 2),
        "features": {
            name: f"{spec['dim']} x {spec['encoding']} = {_feature_bytes(name, spec)} bytes/frame"
            for name, spec in header.features.items()
        }
        or "none",
        "teacher": header.teacher,
        "fingerprint": header.fingerprint,
        "targets": header.target_source,
        "frame rate": header.frame_rate,
        "files": len(header.checksums),
        "schema": header.schema_version,
    }


def _feature_bytes(name: str, spec: dict[str, Any]) -> int:
    return field_bytes(feature_fields(name, spec["dim"], spec["encoding"]))


def read_frontend(path: str | Path) -> tuple[dict[str, Any], dict] | None:
    """The teacher's conv stack carried by a cache: ``(spec, state_dict)``, or None."""
    from safetensors.torch import load

    header = read_header(path)
    if header.frontend is None:
        return None
    try:
        data = read_bytes(path, FRONTEND)
    except FileNotFoundError:
        data = None
    expected = header.checksums.get(FRONTEND, "")
    return header.frontend, load(check_bytes(f"{path}/{FRONTEND}", data, expected))
