# Two commands a new user needs: `make demo` and `make test`. Both set everything up first
# and are safe to run again.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
# Appliance tests spend their time in one single-threaded TCG qemu each: one worker per core.
# Whole files go to one worker so their module fixtures (converted guests) are made once.
WORKERS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: setup test test-fast lint demo clean

setup: $(STAMP)

$(STAMP): scripts/setup.sh pyproject.toml
	bash scripts/setup.sh
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest tests -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

# Developer loop: unit tests only (no appliance, no VM boots).
test-fast: setup
	$(VENV)/bin/pytest tests -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(PY) -m tests.guests.demo

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
