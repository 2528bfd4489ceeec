"""Where an utterance's samples are: one type, :class:`Address`, that says where the bytes are
and how to read and identify the samples they hold. Its kinds (a whole file, a range of a
longer recording, a row of a table: :mod:`pipeline.audio.addresses` lists them) are registered
in :data:`ADDRESSES`; a manifest row names its kind by the keys it holds (:func:`address_of`).

A new kind (an fsspec URL, say) is one module holding a registered :class:`Address` dataclass
and its reading, and a line in :mod:`pipeline.audio.addresses`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch

from pipeline.core.config import from_dict
from pipeline.core.errors import ConfigError
from pipeline.core.registry import Registry

ADDRESSES: Registry = Registry("audio address")
WHOLE_FILE = "file"  # the kind of a manifest row that names no other


class Located(NamedTuple):
    """An address checked and pinned down to the samples it uses (at the audio's own rate),
    and their identity (sha256)."""

    address: Address
    samples: int
    sample_rate: int
    sha256: str


class Address(ABC):
    """Where an utterance's samples are. Each kind is a frozen dataclass with a ``path`` (the
    file holding the bytes; in a manifest, relative to the corpus's audio root), registered in
    :data:`ADDRESSES` under its ``name``.

    Attributes:
        name: the kind.
        keys: its fields a manifest row holds beyond ``audio`` (the path), each left out where
            it holds its default; a row holding one at another value is of this kind.
        whole: whether the address is all of its file (a message names such an utterance by
            its file alone).
        config_type: the dataclass :func:`address_of` builds from a manifest row's keys (the
            kind itself), as the registry's components are built from their settings.
    """

    name: ClassVar[str]
    keys: ClassVar[tuple[str, ...]] = ()
    whole: ClassVar[bool] = False
    config_type: ClassVar[type]
    path: Path

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.config_type = cls

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a string names the same file

    @property
    def where(self) -> str:
        """How messages name the place: its file (and row)."""
        return str(self.path)

    @abstractmethod
    def locate(self) -> Located:
        """Decode the samples, check them and pin them down (a time range becomes samples).

        Raises:
            AudioError: one line naming the file (and row): missing, undecodable, empty,
                NaN/Inf or out-of-range audio.
        """

    @abstractmethod
    def read(self, samples: int) -> torch.Tensor:
        """The ``samples`` located samples as a mono float32 waveform at 16 kHz, ``(n,)``.

        Raises:
            AudioError: naming the file (and row): missing, unreadable or changed audio.
        """

    def under(self, root: Path) -> Address:
        """The same address with a relative path taken from ``root``."""
        path = Path(self.path)
        return self if path.is_absolute() else dataclasses.replace(self, path=root / path)

    def manifest_keys(self) -> dict[str, Any]:
        """Its :attr:`keys` that do not hold their defaults, in order, for a manifest row."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {k: v for k in self.keys if (v := getattr(self, k)) != defaults[k]}


def address_of(row: Mapping[str, Any], where: str) -> Address:
    """The address a manifest row names: its path ``audio`` and the :attr:`Address.keys` of the
    one kind whose keys it holds at other values than their defaults (none: a whole file; so a
    range from a recording's first sample reads back as its file's first ``samples`` samples,
    which are the same samples).

    Raises:
        ConfigError: naming ``where`` and the key: keys of two kinds, a missing or mistyped key.
    """
    kinds = [ADDRESSES[name] for name in ADDRESSES if _names(ADDRESSES[name], row)]
    if len(kinds) > 1:
        raise ConfigError(f"{where}: keys of two kinds of address ({kinds[0].name}: "
                          f"{', '.join(kinds[0].keys)}; {kinds[1].name}: "
                          f"{', '.join(kinds[1].keys)})")  # fmt: skip
    kind = kinds[0] if kinds else ADDRESSES[WHOLE_FILE]
    if not isinstance(row.get("audio"), str):
        raise ConfigError(f"{where}.audio: expected a path, got {row.get('audio')!r}")
    fields = {k: row[k] for k in kind.keys if k in row}
    return from_dict(kind.config_type, {"path": row["audio"], **fields}, where)


def _names(kind: type[Address], row: Mapping[str, Any]) -> bool:
    """Whether ``row`` holds a key of ``kind`` (not null, not at its default)."""
    defaults = {f.name: f.default for f in dataclasses.fields(kind)}
    return any(row.get(k) is not None and row[k] != defaults[k] for k in kind.keys)
