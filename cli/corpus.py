"""`pipeline prepare`: build the corpus manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import PARAMS, app, reported
from pipeline.core.config import load_params, override, section


@app.command("prepare")
def prepare_cmd(
    out: Path = typer.Option(
        Path("data"), help="output folder: manifest.jsonl, summary.json, audio/"
    ),
    params: Path = PARAMS,
    skip_bad: bool = typer.Option(
        None, "--skip-bad/--no-skip-bad", help="override prepare.skip_bad"
    ),
) -> None:
    """Build the corpus manifest (demo synthesis, LibriSpeech folder or a user list)."""
    from stages import prepare

    with reported():
        raw = override(load_params(params), {"prepare.skip_bad": skip_bad})
        summary = prepare.run(section(raw, "prepare", prepare.PrepareConfig), out)
    typer.echo(f"manifest: {out / prepare.MANIFEST}  {summary}")
