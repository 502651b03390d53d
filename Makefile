# The dev loop in one place: `make help` lists the targets. CI (.ci/run) runs the same lint targets.
PYTHON ?= python
# ruff is pointed at the code only: given `.`, ruff format would also reformat README.md's examples.
LINT_PATHS = pipeline tests bench

.DEFAULT_GOAL := help
.PHONY: help test test-fast lint ruff mypy

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

test:  ## the whole suite, end to end against PostgreSQL (POSTGRES_DSN, else an embedded server)
	$(PYTHON) -m pytest

test-fast:  ## the unit tier only (tests/unit): no database, no subprocess
	$(PYTHON) -m pytest tests/unit -q

lint:  ## ruff and mypy; both run, and it fails if either fails
	@$(MAKE) --no-print-directory -k ruff mypy

ruff:  ## ruff check and ruff format --check
	@status=0; ruff check $(LINT_PATHS) || status=1; ruff format --check $(LINT_PATHS) || status=1; exit $$status

mypy:  ## mypy pipeline, configured in pyproject.toml [tool.mypy]
	mypy pipeline
