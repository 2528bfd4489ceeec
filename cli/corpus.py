"""`pipeline prepare`: build the corpus manifest."""

from __future__ import annotations

from pathlib import Path

import click
import typer
from typer.core import TyperCommand

from cli.common import PARAMS, app, reported
from pipeline.core.config import load_params, override, section


class _ListsSources(TyperCommand):
    """A command whose help ends with the registered corpus sources, read from their registry
    when the help is shown (so `pipeline --help` imports none)."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from pipeline.corpus.sources import described

        self.__dict__.setdefault("own_help", self.help)
        kinds = "\n\n".join(f"- {line}" for line in described())
        self.help = f"{self.own_help}\n\nprepare.source.kind, one of:\n\n{kinds}"
        super().format_help(ctx, formatter)


@app.command("prepare", cls=_ListsSources)
def prepare_cmd(
    out: Path = typer.Option(
        Path("data"), help="output folder: manifest.jsonl, summary.json, audio/"
    ),
    params: Path = PARAMS,
    skip_bad: bool = typer.Option(
        None, "--skip-bad/--no-skip-bad", help="override prepare.skip_bad"
    ),
) -> None:
    """Build the corpus manifest from the source params `prepare.source` names: each utterance's
    audio checked, identified (sha256) and addressed (a file, a range of one, a table's row)."""
    from stages import prepare

    with reported():
        raw = override(load_params(params), {"prepare.skip_bad": skip_bad})
        summary = prepare.run(section(raw, "prepare", prepare.PrepareConfig), out)
    typer.echo(f"manifest: {out / prepare.MANIFEST}  {summary}")
