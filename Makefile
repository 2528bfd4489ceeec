# The two commands a new user needs; both bootstrap .venv first (idempotent, ~1 min the first time).
#   make demo   - run the whole pipeline offline (dvc repro) and print where the metrics are
#   make test   - run the full test suite (fast and slow tests), as CI does
SHELL := /bin/bash
export HUBERT_KD_VENV ?= $(CURDIR)/.venv
export PATH := $(HUBERT_KD_VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: demo test test-fast bootstrap lock

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	dvc repro
	@echo "metrics: eval/metrics.json and students/*/metrics.json (see also: dvc metrics show)"

test: bootstrap
	python -m pytest -m "slow or not slow"

test-fast: bootstrap
	python -m pytest

# Re-resolve every dependency of the bootstrap into constraints.txt (after changing pyproject.toml
# or constraints.in); the local wheel folder of this machine kind (PIP_FIND_LINKS) is searched too.
lock: bootstrap
	UV_FIND_LINKS="$${PIP_FIND_LINKS:-https://download.pytorch.org/whl/cpu/torch/}" uv pip compile \
	  pyproject.toml constraints.in --extra dev --python-version 3.11 --quiet -o constraints.txt
