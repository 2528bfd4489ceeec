"""A model's evaluation as it was at a git revision or in a DVC experiment: what `pipeline
compare` reads to compare two models across experiments (each model's evaluation json keeps
its per-utterance errors, and DVC commits it with every experiment)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.errors import ManifestError


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``name@rev`` -> ``(name, rev)``; a bare ``name`` is the workspace's (rev None)."""
    name, sep, rev = spec.partition("@")
    if not name or (sep and not rev):
        raise ValueError(f"{spec!r}: expected MODEL or MODEL@REV (a git revision or a DVC "
                         "experiment name)")  # fmt: skip
    return name, rev or None


def read_evaluation(spec: str, models_dir: Path, repo: Path = Path(".")) -> dict:
    """The evaluation json of model ``name`` at ``rev`` (``name@rev``; the workspace's for a bare
    name), read through DVC's API, which resolves experiment names as well as git revisions.

    Raises:
        ManifestError: no such file at that revision (named), or not an evaluation.
    """
    name, rev = parse_spec(spec)
    path = Path(models_dir) / f"{name}.json"
    where = f"{path} at {rev}" if rev else str(path)
    try:
        if rev is None:
            text = (Path(repo) / path).read_text()
        else:
            import dvc.api

            text = dvc.api.read(path.as_posix(), repo=str(repo), rev=rev)
    except Exception as err:  # dvc raises its own kinds for a missing path, rev or repository
        raise ManifestError(f"{where}: cannot read it ({type(err).__name__}: {err}); is {name!r} "
                            f"evaluated there?") from err  # fmt: skip
    doc = json.loads(text)
    if "utterances" not in doc or "runs" not in doc:
        raise ManifestError(f"{where}: holds no per-utterance errors (an evaluation of an earlier "
                            "version): evaluate the model again there")  # fmt: skip
    return doc
