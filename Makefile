# Lamia's two commands: `make demo` runs a whole release locally, `make test` runs the tests.
# Both work on a fresh machine with nothing but Python: they create .venv and install
# the Debian packages they need when missing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the tests need, each as package:path-that-shows-it-is-installed.
APT_NEEDS := prometheus:/usr/bin/prometheus postgresql:/usr/lib/postgresql
PYTEST_ARGS ?=
# Hypothesis profile of the tests run by make (tests/conftest.py): "ci" replays the same examples on
# every run, so a red run is a defect and never bad luck. Pytest run by hand uses "local", which
# explores new examples each time.
HYPOTHESIS_PROFILE ?= ci
export HYPOTHESIS_PROFILE

.PHONY: test test-fast lint typecheck pytest demo ui-check bench venv system-packages clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Installs only what is missing, so a machine that has them needs no root.
system-packages:
	@missing=""; for need in $(APT_NEEDS); do \
	  [ -e "$${need#*:}" ] || missing="$$missing $${need%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing" >&2; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# ruff, then the import contracts of .importlinter (layers, no Prefect in lamia_core, the sandbox
# only for tests and the demo, a domain that reaches no adapter).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy lamia_core
	$(VENV)/bin/mypy tasks flows lamia_sandbox scripts

# The whole release on this machine, with the Prefect UI: JSON=1 prints one JSON report on stdout,
# KEEP=1 keeps the Prefect UI (and the sandbox) up until Ctrl-C. It needs Prometheus only.
# With JSON=1 stdout carries the report only, so make echoes no command (even on a first run).
ifdef JSON
.SILENT:
endif
demo: APT_NEEDS := prometheus:/usr/bin/prometheus
demo: venv system-packages
	$(VENV)/bin/lamia demo $(if $(JSON),--json) $(if $(KEEP),--keep)

# What a person sees: the demo's step tables rendered by the Prefect UI in headless Chromium,
# saved as screenshots/steps-table.png. Needs chromium, so it is not part of `make test`.
ui-check: APT_NEEDS := prometheus:/usr/bin/prometheus chromium:/usr/bin/chromium
ui-check: venv system-packages
	$(PY) scripts/ui_check.py

pytest: venv system-packages
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The quick loop: everything but the tests marked integration (those that start Prometheus, Prefect
# or PostgreSQL), so it needs no Debian package.
test-fast: lint typecheck
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
