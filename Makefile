# The two set-up commands of the README. Each makes its own virtual environment on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= work/demo

.PHONY: install test test-fast demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# torch first, pinned to the CPU wheel this machine has, so nothing resolves a CUDA build
install: $(BIN)/python
	$(BIN)/pip install "torch==2.13.0"
	$(BIN)/pip install -e ".[test]"
	@if $(BIN)/pip list 2>/dev/null | grep -i '^nvidia-'; then echo "error: nvidia-* packages were installed" >&2; exit 1; fi

test: install
	$(BIN)/python -m pytest

# the development loop: everything but the tests marked slow (under a minute); CI runs `make test`
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

demo: install
	bash scripts/demo.sh $(BIN) $(DEMO)

clean:
	rm -rf $(VENV) work
