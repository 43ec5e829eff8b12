# The two commands: `make run` and `make test`. Everything else is a helper of theirs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# make run: a simulated day at the default site, from before dawn, 2 simulated minutes a real second,
# with four sample parts and the battery just above the planning reserve: the node waits for the sun,
# then prints what the sun can carry (`printnode status` and `printnode plan --plot` work against it).
RUN_ARGS ?= --set clock.time_scale=120 --set 'clock.start="05:00"' --set jobs.sample_jobs=4 \
            --set telemetry.simulated.initial_soc=0.33

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
