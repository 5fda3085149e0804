# booktape — the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install browser demo test lint types unit k8s bench clean

help:
	@echo "make demo   run the simulator, collectors and merger end to end on a local store"
	@echo "make test   install what the tests need, then lint, type-check and run the suite"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the dependency list or a C extension (built in place by the editable
# install) changes.
$(STAMP): pyproject.toml setup.py booktape/_fastframe.c booktape/_fastbook.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# Headless Chromium renders `booktape report` pages in the tests (Debian package `chromium`).
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null

browser: $(CHROMIUM)

demo: $(STAMP)
	$(BIN)/python -m simulator.demo

# Benchmarks (bench/): each prints its figures and a ratio against a baseline run alongside.
BENCH_STAMP := $(VENV)/.bench-installed
BENCHES     ?= collector merger book soak schedule replay
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $@

bench: $(BENCH_STAMP)
	@for b in $(BENCHES); do $(BIN)/python -m bench.$$b $(BENCH_ARGS) || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check booktape collector merger simulator

types: $(STAMP)
	$(BIN)/mypy

# Two workers (the machine has 2 cores; most of the long tests wait on the clock), one
# test file per worker at a time so a file's fixtures (S3 servers) start once.
PYTEST_WORKERS ?= 2
unit: $(STAMP) browser
	BOOKTAPE_CHROMIUM=$(CHROMIUM) $(BIN)/pytest tests -n $(PYTEST_WORKERS) --dist loadfile --durations=15

# Kubernetes: render every overlay (and base) with deploy/k8s/render.py into build/k8s/
# (`kubectl kustomize deploy/k8s/overlays/eu` gives the same), then validate each document
# offline against the bundled schemas of the oldest and newest Kubernetes we support.
K8S_VERSIONS ?= 1.28.0 1.37.0
k8s: $(STAMP)
	rm -rf build/k8s
	$(BIN)/python deploy/k8s/render.py --out build/k8s
	@for v in $(K8S_VERSIONS); do \
	  $(BIN)/kubernetes-validate --strict --quiet -k $$v build/k8s/*.yaml build/k8s/bases/*.yaml \
	    deploy/k8s/examples/*.yaml || exit 1; \
	done
	@echo "k8s: every document valid for Kubernetes $(K8S_VERSIONS)"

test: lint types k8s unit

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache booktape/*.so
