# make run   : set up .venv and run the whole pipeline (dvc repro) on the default data
# make test  : set up .venv and run the test suite
# make bench : benchmarks (numbers go into README.md)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed

# DVC stages run `python`: make it the virtualenv's.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install run test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[dev]"
	touch $(STAMP)

run: install
	$(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check amazonia stages tests bench
	$(BIN)/ruff format --check amazonia stages tests bench

clean:
	rm -rf $(VENV)
