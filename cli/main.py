"""The `pipeline` command: thin typer commands, one module per group, each loading a params
section and calling a stage.

Stages are imported inside each command so that `pipeline --help` (and any process that
imports this module, such as a spawned worker) does not pay for torch and transformers.
"""

# Registered in the pipeline's order, which `pipeline --help` keeps.
# ruff: isort: skip_file
from cli import corpus  # noqa: F401  (prepare)
from cli import teacher  # noqa: F401  (cache-teacher, cache-info, cache-verify, pretrain-teacher)
from cli import students  # noqa: F401  (train-student, sweep, student-info)
from cli import evaluate  # noqa: F401  (evaluate-teacher, -baseline, -student, report)
from cli import export  # noqa: F401  (export)
from cli.common import app

__all__ = ["app"]

if __name__ == "__main__":
    app()
