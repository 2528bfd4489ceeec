"""Where a run must not read its input from: the folder it writes, and every output of the DVC
project around it. `prepare` replaces what it wrote in its folder, DVC removes a stage's
outputs before it runs the stage (persisted ones aside) and each stage rewrites its own: a
corpus kept inside any of them is one run away from being lost, so it is refused before any
work, with where to move it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.config import yaml_problem
from pipeline.core.errors import ConfigError, OutputError

DVC_FILE = "dvc.yaml"
PARAMS_FILE = "params.yaml"  # the variables DVC interpolates by default
_VAR = re.compile(r"\$\{\s*([^}]*?)\s*\}")


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


class Outputs:
    """The folder ``out`` a run writes and the outputs the ``dvc.yaml`` nearest above it and
    above the working folder declare, as real paths (symlinks resolved)."""

    def __init__(self, out: str | Path) -> None:
        self.places = [(_real(out), "the folder this run writes (--out)")]
        self._folders: dict[Path, Path] = {}
        seen = set()
        for start in (_real(out).parent, Path.cwd()):
            folder = project_folder(start)
            if folder is not None and folder not in seen:
                seen.add(folder)
                self.places += [(_real(folder / path), f"an output of stage {stage!r} in "
                                 f"{folder / DVC_FILE}, which that stage (and DVC) rewrites")
                                for stage, path in dvc_outputs(folder)]  # fmt: skip

    def check(self, path: str | Path, what: str) -> None:
        """Refuse ``path`` (an input, named ``what``: a params key, a list's line) if it lies in
        one of the outputs (its folder's real path is resolved once per folder).

        Raises:
            OutputError: one line naming the path, the output it is in and where to move it.
        """
        path = Path(path)
        if path.parent not in self._folders:
            self._folders[path.parent] = _real(path.parent)
        real = Path(os.path.normpath(self._folders[path.parent] / path.name))  # "x/.." too
        for out, why in self.places:
            if real == out or real.is_relative_to(out):
                raise OutputError(
                    f"{path} ({what}) is inside {out}, {why}: move it out of there (e.g. to "
                    f"corpora/) and point {what} at its new place"
                )


def project_folder(start: Path) -> Path | None:
    """The folder of the ``dvc.yaml`` nearest at or above ``start``, searched up to the
    repository's root (a folder holding ``.dvc`` or ``.git``); None if there is none."""
    for folder in (start, *start.parents):
        if (folder / DVC_FILE).is_file():
            return folder
        if (folder / ".dvc").exists() or (folder / ".git").exists():
            return None
    return None


def dvc_outputs(folder: Path) -> list[tuple[str, str]]:
    """``(stage, path)`` for each output, metric and plot of ``folder/dvc.yaml``, relative to
    ``folder``. A ``foreach`` stage's paths are expanded over its items (a list, a mapping or a
    ``${...}`` of ``params.yaml`` or the file's ``vars``); a path whose ``${...}`` cannot be
    resolved stands for the folder before it (``students/${x}/model.pt``: ``students``).

    Raises:
        ConfigError: it or ``params.yaml`` is not valid YAML (one line, at its line).
    """
    doc = _mapping(folder / DVC_FILE)
    context = _mapping(folder / PARAMS_FILE)
    for extra in doc.get("vars") or []:
        if isinstance(extra, dict):
            context.update(extra)
    out = []
    stages = doc.get("stages")
    for name, stage in stages.items() if isinstance(stages, dict) else ():
        body = stage.get("do") if isinstance(stage, dict) and "foreach" in stage else stage
        if not isinstance(body, dict):
            continue
        for label, scope in _expanded(name, stage, context):
            out += [(label, p) for p in _paths(body, scope)]
    return out


def _mapping(path: Path) -> dict:
    """The mapping the YAML file ``path`` holds ({} if it is absent or holds another value).

    Raises:
        ConfigError: it is not valid YAML (one line, at its line).
    """
    if not path.is_file():
        return {}
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(yaml_problem(path, err)) from err
    return doc if isinstance(doc, dict) else {}


def _expanded(name: str, stage: dict, context: dict) -> Iterator[tuple[str, dict]]:
    """``(stage name, variables)`` for each stage a ``foreach`` generates (one for others)."""
    items = stage.get("foreach")
    if items is None:
        yield name, context
        return
    if isinstance(items, str):
        match = _VAR.fullmatch(items.strip())
        items = _lookup(context, match[1]) if match else None
    if isinstance(items, dict):
        for key, item in items.items():
            yield f"{name}@{key}", {**context, "key": key, "item": item}
    elif isinstance(items, list):
        for item in items:
            yield f"{name}@{item}", {**context, "item": item}
    else:
        yield name, context  # unresolved: its paths stand for the folders before ${...}


def _paths(body: dict, scope: dict) -> Iterator[str]:
    for field in ("outs", "metrics", "plots"):
        entries = body.get(field)
        for entry in entries if isinstance(entries, list) else ():
            raw = next(iter(entry), None) if isinstance(entry, dict) else entry
            if isinstance(raw, str) and (path := _interpolate(raw, scope)):
                yield path


def _interpolate(path: str, scope: dict) -> str:
    """``path`` with each ``${name}`` replaced from ``scope``; where one cannot be, the folder
    before the first ``${`` ("" when there is none)."""
    try:
        return _VAR.sub(lambda m: str(_lookup(scope, m[1], strict=True)), path)
    except KeyError:
        return path[: path.find("${")].rpartition("/")[0]


def _lookup(scope: Any, dotted: str, strict: bool = False) -> Any:
    for part in dotted.split("."):
        if not isinstance(scope, dict) or part not in scope:
            if strict:
                raise KeyError(dotted)
            return None
        scope = scope[part]
    if strict and isinstance(scope, (dict, list)):
        raise KeyError(dotted)
    return scope
