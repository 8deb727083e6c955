# The two commands: `make demo` (the whole job, end to end) and `make test`.
# Everything runs from .venv, created from requirements.txt (the lock) on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

export DO_NOT_TRACK := 1

.PHONY: venv demo test up bench lint lock clean db-start db-stop

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements.txt
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	touch $(STAMP)

demo: venv
	$(PY) -m segment_elt.local.demo

test: venv
	$(PY) -m pytest

up: venv
	$(PY) -m segment_elt.local.up

bench: venv
	$(PY) -m benchmarks

# Python: ruff (lint, then format as a check) and mypy, as configured in pyproject.toml; SQL: sqlfluff
# (its dbt templater compiles against DATABASE_URL, else the embedded PostgreSQL).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m segment_elt.local.lint_sql

db-start: venv
	$(PY) -m segment_elt.local.embedded start

db-stop: venv
	$(PY) -m segment_elt.local.embedded stop

# Re-pin requirements.txt (every extra of pyproject.toml) after editing the dependencies there.
lock: venv
	$(VENV)/bin/uv pip compile --quiet pyproject.toml --all-extras -o requirements.txt --python-version 3.11

clean:
	-$(PY) -m segment_elt.local.embedded stop
	rm -rf .local
