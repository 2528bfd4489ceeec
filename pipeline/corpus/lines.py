"""Line-based files (the corpus manifest, user lists, Kaldi tables, Lhotse manifests,
LibriSpeech transcripts, lexicons), read lazily one line at a time, each problem named by its
file and line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core.errors import CorpusError, single_line


def numbered_lines(
    path: Path, error: type[Exception] = CorpusError, what: str = "file"
) -> Iterator[tuple[str, str]]:
    """``(path:line, line)`` for each line of ``path`` that is not blank, without its line
    break; a ``.gz`` file is decompressed.

    Raises:
        error: ``path: <what> not found``, ``path:line: not UTF-8 text (...)``, or ``path:
            cannot read the <what> (...)`` (unreadable, or a damaged gzip stream).
    """
    try:
        f = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except FileNotFoundError as err:
        raise error(f"{path}: {what} not found") from err
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({single_line(err)})") from err
    with f:
        lineno = 0
        while True:
            try:
                raw = f.readline()
            except (OSError, EOFError) as err:  # gzip's BadGzipFile is an OSError
                raise error(f"{path}: cannot read the {what} ({single_line(err)})") from err
            if not raw:
                return
            lineno += 1
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise error(f"{path}:{lineno}: not UTF-8 text ({err.reason} at byte "
                            f"{err.start} of the line)") from err  # fmt: skip
            if line.strip():
                yield f"{path}:{lineno}", line


def json_lines(
    path: Path, error: type[Exception] = CorpusError, what: str = "file"
) -> Iterator[tuple[str, Any]]:
    """``(path:line, value)`` for each line of a JSON Lines file that is not blank, parsed.

    Raises:
        error: as :func:`numbered_lines`, or ``path:line: not JSON (...)``.
    """
    for where, line in numbered_lines(path, error, what):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{where}: not JSON ({err})") from err
        yield where, value
