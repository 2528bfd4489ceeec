"""The `pipeline` command: thin typer commands, one module per group, each loading a params
section and calling a stage.

Stages are imported inside each command so that `pipeline --help` (and any process that
imports this module, such as a spawned worker) does not pay for torch and transformers.
"""

from cli import corpus, evaluate, export, students, teacher  # noqa: F401  (register the commands)
from cli.common import app

__all__ = ["app"]

if __name__ == "__main__":
    app()
