# The two commands: `make run` and `make test`. Everything else is a helper of theirs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_ARGS ?= --set clock.time_scale=60

.PHONY: build run test bench clean

build: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard ext/*.pyx)
	scripts/ensure-system-deps.sh build
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: build
	$(VENV)/bin/printnode run $(RUN_ARGS)

test: build
	scripts/ensure-system-deps.sh test
	$(PY) -m pytest -q

bench: build
	$(PY) bench/run_all.py

clean:
	rm -rf build $(VENV) node/*.so ext/*.c *.egg-info
