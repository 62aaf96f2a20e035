# The README's two commands:
#   make demo   set up, then run the main job (synthesize the example app, train, serve, predict)
#   make test   set up, then lint, type-check and run the tests (what CI runs)
SHELL := /bin/bash
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
# jsii names the Node majors whose end-of-life notice to skip: Node 20 is the machine's.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
PY := .venv/bin/python
STAMP := .venv/.setup-stamp
COMPAT_STAMP := .venv/.compat-stamp
SETUP_INPUTS := scripts/setup.sh runtime/docker/install.sh requirements.txt runtime/pyproject.toml constructs/pyproject.toml package.json package-lock.json

.PHONY: setup demo test lint typecheck unit compat bench image

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	bash scripts/setup.sh
	touch $@

$(COMPAT_STAMP): $(STAMP)
	COMPAT_VENVS=1 bash scripts/setup.sh
	touch $@

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: setup
	$(PY) -m mypy

# The runtime image (scripts/image.sh: podman with storage in build/podman, or docker build);
# tests/image runs train, serve and a two-container MPI job in it.
image: setup
	bash scripts/image.sh build

unit: setup image
	$(PY) -m pytest

# The runtime's Chainer tests again on NumPy 1.26 (Python 3.11) and on Python 3.12 (NumPy 2).
COMPAT_TESTS := tests/runtime/test_chainer_compat.py tests/runtime/test_train_example.py
compat: $(COMPAT_STAMP)
	.venv-np1/bin/python -m pytest -m compat -p no:cacheprovider $(COMPAT_TESTS)
	.venv-py312/bin/python -m pytest -m compat -p no:cacheprovider $(COMPAT_TESTS)

test: lint typecheck unit compat

demo: setup
	$(PY) scripts/demo.py

# Benchmarks (not part of `make test`): launch overhead, synth cost, the model server vs the
# old SageMaker serving stack (needs wrk and nginx-light: apt-get install -y wrk nginx-light).
bench: setup
	$(PY) benchmarks/train_overhead.py
	$(PY) benchmarks/synth_cost.py
	$(PY) benchmarks/serve_bench.py
