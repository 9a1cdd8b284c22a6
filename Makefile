# Set-up and the two everyday commands. `make quickstart` and `make test` each build the
# virtual environment first if it is missing or older than pyproject.toml.
#
# TORCH picks the PyTorch build. The default pin installs the CPU wheel on a machine that has
# it cached and the standard CUDA wheel from PyPI on a Linux GPU machine; override it for
# another build, e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
EXTRAS ?= train,eval,serve,dev,quant
BIN     = $(VENV)/bin

.PHONY: setup quickstart test test-fast lint bench clean test-gpu bench-gpu rehearse-gpu

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

quickstart: setup
	$(BIN)/llada quickstart

# `make test` runs every test but the GPU ones (CI runs it); `make test-fast` leaves out the slow unit
# tests and tests/integration/ (several processes, a server over HTTP, Chromium, end-to-end runs).
test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not integration and not gpu"

# On a CUDA machine (no venv needed: torch, transformers, safetensors, accelerate, pytest): the
# device-portable tests in bfloat16, then `bench/gpu.sh` runs them and every GPU benchmark into $OUT.
GPU_PYTHON ?= python3
test-gpu:
	LLADA_TEST_DEVICE=cuda LLADA_TEST_DTYPE=bfloat16 PYTHONPATH=. $(GPU_PYTHON) -m pytest --noconftest -q -o addopts="" tests/unit/test_device.py

bench-gpu:
	PYTHON=$(GPU_PYTHON) bash bench/gpu.sh

# The same script on this machine's CPU with tiny shapes, before spending device time on it.
rehearse-gpu: setup
	REHEARSAL=1 OUT=runs/gpu-rehearsal PYTHON=$(BIN)/python bash bench/gpu.sh

lint: setup
	$(BIN)/ruff check llada tests bench tools
	$(BIN)/python tools/code_shape.py --check

clean:
	rm -rf $(VENV) runs .pytest_cache
