"""Reading ``.pt`` files with torch's weights-only unpickler, every failure naming the file.

Both of torch's formats (the zip format and the legacy one of ``_use_new_zipfile_serialization
=False``) go through the same restricted unpickler; a file that needs Python objects beyond
torch's allowed ones is only read with inert stand-ins the caller names (see
``pipeline.teacher.fairseq``), never by importing and running its classes.
"""

from __future__ import annotations

import pickle
import pickletools
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import CheckpointError

# What a damaged, truncated or foreign file makes torch.load raise.
READ_ERRORS = (
    pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
    KeyError, IndexError, OSError, zipfile.BadZipFile, UnicodeDecodeError,
)  # fmt: skip


def load_weights(path: str | Path, what: str, safe_globals: list | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (with extra ``safe_globals``).

    Raises:
        CheckpointError: the file is missing, damaged, truncated, not a torch file, or holds
            Python objects the restricted unpickler refuses (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    scope = torch.serialization.safe_globals(safe_globals) if safe_globals else nullcontext()
    try:
        with scope:
            return torch.load(path, map_location="cpu", weights_only=True)
    except READ_ERRORS as err:
        needed = unsafe_globals(path)
        reason = (
            f"it pickles Python objects ({', '.join(needed)})"
            if needed
            else f"damaged, truncated or not a torch file ({_first_line(err)})"
        )
        raise CheckpointError(f"{path}: cannot read the {what}: {reason}") from err


def unsafe_globals(path: str | Path) -> list[str]:
    """The Python globals a ``.pt`` file needs beyond torch's weights-only allow-list (zip or
    legacy format); [] when it needs none or cannot be parsed at all."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        return _legacy_globals(path)
    except READ_ERRORS:
        return []


def _legacy_globals(path: Path) -> list[str]:
    """Globals named by the pickles of a legacy-format file (magic number, protocol, system
    info, then the object itself), minus those torch allows."""
    from torch import _weights_only_unpickler

    names: set[str] = set()
    with open(path, "rb") as f:
        for _ in range(4):
            strings: list[str] = []
            for op, arg, _pos in pickletools.genops(f):
                if op.name == "GLOBAL":
                    names.add(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    names.add(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
    allowed = set(_weights_only_unpickler._get_allowed_globals())
    allowed |= {f"{g.__module__}.{g.__qualname__}" for g in _safe_classes()}
    return sorted(n for n in names if n not in allowed and not _is_storage(n))


def _safe_classes() -> list:
    out = []
    for g in torch.serialization.get_safe_globals():
        out.append(g[0] if isinstance(g, tuple) else g)
    return [g for g in out if hasattr(g, "__qualname__")]


def _is_storage(name: str) -> bool:
    """Legacy files name typed storages (``torch.FloatStorage``), which torch allows."""
    return name.startswith("torch.") and name.endswith("Storage")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
