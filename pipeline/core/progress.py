"""Progress bars for long work (rich, on stderr so stdout stays clean for results)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(enabled: bool = True) -> Progress:
    """A progress bar with count, elapsed and remaining time and a free ``info`` field.

    Add tasks with ``bar.add_task(description, total=n, info="")`` and update ``info`` with
    rates such as frames/s. Set ``HUBERT_KD_NO_PROGRESS=1`` to silence it; ``enabled=False``
    silences one bar (e.g. on every rank but the first).
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        disable=not enabled or os.environ.get("HUBERT_KD_NO_PROGRESS") == "1",
    )


@contextmanager
def quiet_transformers(quiet: bool = True) -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Writing model shards") off while
    ``quiet``, so that only the project's bars show; a download from the hub keeps its bars."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was:
            hf_logging.enable_progress_bar()
