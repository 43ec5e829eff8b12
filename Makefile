# The two commands: `make run` and `make test`. Everything else is a helper of theirs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# make run: a simulated day at the default site, from before dawn, 2 simulated minutes a real second,
# four sample parts, a small van-sized bank (40 Ah LiFePO4, 0.5 kWh) just above the planning reserve, and
# a thick cloud from 09:25 to 11:55 that the forecast does not know about: the node waits for the sun,
# prints, pauses the print the cloud catches (then switches the printer off: a warm bed would cross the
# reserve), resumes it through the power-loss path once the sun is back, and prints the rest
# (`printnode status` and `printnode plan --plot` work against it).
RUN_ARGS ?= --set clock.time_scale=120 --set 'clock.start="05:00"' --set jobs.sample_jobs=4 \
            --set telemetry.simulated.initial_soc=0.33 --set battery.capacity_ah=40 \
            --set 'telemetry.simulated.clouds=[{start="09:25", hours=2.5, clearness=0.05}]'

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
