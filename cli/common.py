"""What every command shares: the typer app, common options, and errors as one-line exits."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from pipeline.core.errors import ConfigError, single_line

app = typer.Typer(
    help="Distil HuBERT into small LSTM students from a cached teacher (KD / DKD).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file (one section per stage)")
MANIFEST = typer.Option(Path("data/manifest.jsonl"), help="corpus manifest written by `prepare`")
CACHE = typer.Option(
    "cache", help="teacher cache written by `cache-teacher`: a folder or an fsspec URL"
)


def one_line(err: BaseException) -> str:
    """The message of a domain error in one line. Errors re-raised from DataLoader workers
    carry the worker's traceback in their message: keep its last line, the original message;
    any other message over several lines (a library's) has its lines joined."""
    message = str(err.args[0] if err.args else err)
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return single_line(message)


@contextmanager
def reported() -> Iterator[None]:
    """Domain errors become a one-line message and exit code 2 (a bad config, naming the key)
    or 1 (bad input: a file, a cache, a checkpoint, an output that must not be written; an
    optional package to install; any other ValueError/KeyError the library raises with a
    message)."""
    try:
        yield
    except ConfigError as err:
        console.print(f"[red]config error:[/red] {escape(one_line(err))}", soft_wrap=True)
        raise typer.Exit(2) from err
    except (ValueError, KeyError, OSError, ImportError) as err:
        console.print(f"[red]error:[/red] {escape(one_line(err))}", soft_wrap=True)
        raise typer.Exit(1) from err


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )
