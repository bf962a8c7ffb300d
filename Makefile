# Two commands on a fresh machine: `make run` and `make test`. Both create .venv if missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: setup run test test-fast nab lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# (setuptools prints an informational "Editable installation." note for every editable
	# install of a flat layout; it is not a problem with the package, so it is not shown)
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pipelines.flink.jars
	touch $(STAMP)

run: setup
	$(BIN)/twin run $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

nab: setup  # the detector on the Numenta Anomaly Benchmark (../shared/bench/nab)
	$(BIN)/twin bench nab $(ARGS)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache
