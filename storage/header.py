"""What a cache holds: ``header.json`` (the cache) and ``part.json`` (each committed part).

A cache is a folder (or fsspec URL) of parts, ``parts/<name>/``, each written and committed on
its own (by any process, on any machine), and a ``header.json`` written last that lists the
parts; a folder without a header is never read as a cache. A part holds its data files,
``keys.json`` (its utterance ids), ``checksums.json`` (every data file's sha256, taken as
written) and, last, ``part.json`` (counts and the sha256 of those two lists). Both JSON headers
carry a digest over their other fields, and the cache's header each part's digest: nothing can
be edited without every reader noticing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.config import from_dict
from pipeline.core.errors import CacheFormatError, ConfigError
from pipeline.core.hashing import sha256_bytes
from storage.codecs import codec_from_header, field_bytes
from storage.features import decode_feature, feature_fields
from storage.integrity import check_bytes
from storage.location import filesystem, read_bytes

SCHEMA_VERSION = 6  # 6: logits shifted per frame, learned codecs, int16 targets (C < 32768)
HEADER = "header.json"
PART = "part.json"
KEYS = "keys.json"
CHECKSUMS = "checksums.json"
PARTS = "parts"
FRONTEND = "frontend.safetensors"
FITTED = "fitted.safetensors"  # what stage one fitted once for all parts (k-means, codec)
FITTED_RECIPE = "fitted.json"  # what it was fitted for, and the tensors' sha256


@dataclass(frozen=True)
class PartInfo:
    """A committed part as the header lists it.

    Attributes:
        name: its folder under ``parts/``.
        num_utterances: utterances in it.
        num_frames: frames in it.
        digest: the digest of its ``part.json``.
    """

    name: str
    num_utterances: int
    num_frames: int
    digest: str


@dataclass(frozen=True)
class PartHeader:
    """``parts/<name>/part.json``: one committed part, in a few lines whatever its size (so
    finalizing reads O(parts)); its lists live beside it, in files whose sha256 it holds.

    Attributes:
        name: the part's name (its folder).
        backend: the backend that wrote it.
        num_utterances: utterances in the part.
        num_frames: frames in the part.
        index: sha256 of ``keys.json`` (utterance ids in storage order) and of
            ``checksums.json`` (sha256 of every data file, taken as written).
    """

    name: str
    backend: str
    num_utterances: int
    num_frames: int
    index: dict[str, str]


@dataclass(frozen=True)
class PartContents:
    """A committed part as a reader needs it: its ids, frames and data checksums, checked."""

    name: str
    keys: list[str]
    num_frames: int
    checksums: dict[str, str]


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
            ``{"name": "pq", "bytes": 62, "groups": [...], "constants": <sha256>}`` (see
            ``storage.codecs``; a learned codec's constants are in ``fitted.safetensors``);
            None for a store of features only (no logits, no targets), such as the
            evaluation's per-model probe features.
        target_source: how per-frame targets were made (``argmax`` of the teacher's logits).
        num_utterances: utterances in the cache.
        num_frames: frames in the cache.
        parts: the committed parts, in storage order.
        checksums: sha256 of the cache's own files beside the parts (the conv stack).
        frontend: the teacher's conv stack (``pipeline.nn.conv.frontend_spec``), whose
            weights are in ``frontend.safetensors``, so students can start from them.
        features: teacher features stored per frame beside the logits, by name (``conv``: the
            conv stack's output; ``layer_<i>``: Transformer layer i, 0 = its input), each
            ``{"dim": D, "encoding": "float16" | "int8"}`` (see ``storage.codecs``).
        teacher_class: the teacher encoder's class, as transformers' ``model_type`` names it
            (``hubert``, ``wav2vec2``, ``wavlm``, ``data2vec-audio``); a cache written before
            the field was a HuBERT's, the only class then. "" for a store of features only.
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
    codec: dict[str, Any] | None
    target_source: str
    num_utterances: int = 0
    num_frames: int = 0
    parts: list[PartInfo] = dataclasses.field(default_factory=list)
    checksums: dict[str, str] = dataclasses.field(default_factory=dict)
    frontend: dict[str, Any] | None = None
    features: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    teacher_class: str = "hubert"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def content(self) -> dict[str, Any]:
        """Everything that determines what the parts hold (not which parts there are)."""
        drop = ("num_utterances", "num_frames", "parts", "checksums", "corpus")
        return {k: v for k, v in self.to_json().items() if k not in drop}

    def fields(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-frame fields stored for each utterance: name -> (shape after frames, dtype)."""
        fields = {}
        if self.codec is not None:
            fields["targets"] = ((), self.target_dtype)
            fields.update(codec_from_header(self.codec).fields(self.num_classes))
        for name, spec in self.features.items():
            fields.update(feature_fields(name, spec["dim"], spec["encoding"]))
        return fields

    def bytes_per_frame(self) -> int:
        """Uncompressed bytes per frame (targets + encoded logits + features)."""
        return field_bytes(self.fields())

    @property
    def target_dtype(self) -> str:
        """How targets are stored: int16 while the classes fit (C < 32768), else int32."""
        return "int16" if self.num_classes <= np.iinfo(np.int16).max else "int32"

    @property
    def argmax_targets(self) -> bool:
        """Whether each frame's target is the argmax of its logits (exact side information a
        decoder can restore the argmax from)."""
        return self.target_source == "argmax"

    def decode_features(self, fields: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Stored fields -> each cached teacher feature ``(n, D)`` float32."""
        return {
            name: decode_feature(name, fields, spec["encoding"])
            for name, spec in self.features.items()
        }


def json_digest(fields: dict[str, Any]) -> str:
    """sha256 of a JSON document's fields (all but ``digest``) as canonical JSON."""
    body = {k: v for k, v in fields.items() if k != "digest"}
    return sha256_bytes(json.dumps(body, sort_keys=True).encode())


def json_with_digest(doc: Any) -> tuple[bytes, str]:
    """A header or part header as JSON bytes carrying its digest, and the digest."""
    fields = dataclasses.asdict(doc)
    digest = json_digest(fields)
    text = json.dumps({**fields, "digest": digest}, indent=2, sort_keys=True) + "\n"
    return text.encode(), digest


def read_with_digest(path: str | Path, name: str, cls: type, expect_digest: str | None = None):
    """Read JSON document ``name`` of folder or URL ``path`` as ``cls``, checking its digest
    (and that it is ``expect_digest`` when given) and every field's type.

    Raises:
        FileNotFoundError: no such file.
        CacheFormatError: damaged or edited, naming the file.
    """
    file = f"{path}/{name}"
    try:
        raw = json.loads(read_bytes(path, name))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CacheFormatError(f"{file}: damaged header ({err})") from err
    if not isinstance(raw, dict):
        raise CacheFormatError(f"{file}: damaged header (a JSON object expected)")
    if cls is CacheHeader and raw.get("schema_version") != SCHEMA_VERSION:
        raise CacheFormatError(
            f"{file}: cache schema version {raw.get('schema_version')!r}, this hubert-kd reads "
            f"{SCHEMA_VERSION}; rerun cache-teacher"
        )
    digest = raw.get("digest")
    if digest != json_digest(raw) or (expect_digest is not None and digest != expect_digest):
        raise CacheFormatError(
            f"{file}: the header was edited or damaged (its digest does not match); "
            "rerun cache-teacher"
        )
    try:
        return from_dict(cls, {k: v for k, v in raw.items() if k != "digest"}, where=file)
    except ConfigError as err:
        raise CacheFormatError(f"damaged header: {err}") from err


def read_header(path: str | Path) -> CacheHeader:
    """Read and check ``path/header.json`` (``path`` a folder or an fsspec URL): its schema
    version, its digest (any edit of the header is caught) and the type of every field.

    Raises:
        CacheFormatError: missing header (incomplete cache), bad JSON, unknown schema, an edited
            or damaged header.
    """
    try:
        return read_with_digest(path, HEADER, CacheHeader)
    except FileNotFoundError as err:
        raise CacheFormatError(
            f"{path}: no {HEADER}; not a cache, or an incomplete one (rerun cache-teacher)"
        ) from err


def part_location(path: str | Path, name: str) -> str:
    return f"{str(path).rstrip('/')}/{PARTS}/{name}"


def read_part(path: str | Path, info: PartInfo) -> PartContents:
    """A part listed in a header: its ``part.json`` checked against the header's digest, its
    ids and checksums against ``part.json``.

    Raises:
        CacheFormatError: the part is missing, or one of its files damaged (named).
    """
    where = part_location(path, info.name)
    try:
        head = read_with_digest(where, PART, PartHeader, expect_digest=info.digest)
    except FileNotFoundError as err:
        raise CacheFormatError(f"{where}: missing part; rerun cache-teacher") from err
    lists = {}
    for name in (KEYS, CHECKSUMS):
        try:
            data = read_bytes(where, name)
        except FileNotFoundError:
            data = None
        lists[name] = json.loads(check_bytes(f"{where}/{name}", data, head.index.get(name, "")))
    if len(lists[KEYS]) != head.num_utterances:
        raise CacheFormatError(f"{where}/{KEYS}: {len(lists[KEYS])} ids, part.json says "
                               f"{head.num_utterances}; rerun cache-teacher")  # fmt: skip
    return PartContents(info.name, lists[KEYS], head.num_frames, lists[CHECKSUMS])


def part_exists(path: str | Path, name: str) -> bool:
    """Whether part ``name`` is committed (its ``part.json`` is there)."""
    fs, root = filesystem(part_location(path, name))
    return fs.exists(f"{root}/{PART}")
