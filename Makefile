# make run   : set up .venv and run the whole pipeline (dvc repro) on the default data
# make test  : set up .venv and run the test suite
# make bench : benchmarks (numbers go into README.md)
# make bench-scale : the whole pipeline at Kaggle scale (40,479 chips) in a temporary copy
# make serve : serve models/PlanetModel over TF Serving's REST API on 127.0.0.1:8501
# make push / make pull : share DVC outputs through the configured remote
# make report BASE=<rev> : markdown params/metrics diff, plots page and error gallery against BASE
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed

# DVC stages run `python`: make it the virtualenv's.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install run test bench bench-scale lint clean serve push pull report

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[dev,beam]"
	touch $(STAMP)

run: install
	$(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

bench-scale: install
	$(BIN)/python -m bench scale

serve: install
	$(BIN)/amazonia serve

push: install
	$(BIN)/dvc push

pull: install
	$(BIN)/dvc pull

# Exported and read by the shell ("$$BASE"), never expanded by make into the command: CI
# sets BASE=origin/<target branch> in the environment, and a branch name is not code.
export BASE ?= main
report: install
	$(BIN)/python -m amazonia.report --base "$$BASE"

# zizmor: GitHub Actions security (injection, unpinned actions, leaked credentials), offline.
lint: install
	$(BIN)/ruff check amazonia stages tests bench
	$(BIN)/ruff format --check amazonia stages tests bench
	$(BIN)/zizmor --offline --persona=pedantic .github/workflows/

clean:
	rm -rf $(VENV)
