# make run   : set up .venv (requirements/runtime.txt) and run the whole pipeline (dvc repro) on the default data
# make run GPU=1, make serve GPU=1 : the same with TensorFlow for NVIDIA GPUs (requirements/gpu.txt)
# make test  : set up .venv with the test lock (runtime + Beam + dev tools) and run the test suite
# make test-fast : the same, leaving out the tests marked slow (pipelines, training, servers): the edit loop
# make lint  : ruff, ruff format --check, zizmor, deptry
# make lock  : write requirements/*.txt (hashed) from pyproject.toml; UPGRADE=1: everything to its newest
# make bench : benchmarks (numbers go into docs/benchmarks.md)
# make bench-scale : the whole pipeline at Kaggle scale (40,479 chips) in a temporary copy
# make bench-quality : test F2 of each architecture and augmentation at Kaggle scale, as DVC experiments (hours)
# make serve : serve models/PlanetModel over TF Serving's REST API on 127.0.0.1:8501
# make push / make pull : share DVC outputs through the configured remote
# make report BASE=<rev> : markdown params/metrics diff, plots page and error gallery against BASE
# make docs  : write docs/params.md from the params schema (amazonia/common/params.py, amazonia/serving/params.py)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
UV      = $(BIN)/uv

# The lock .venv gets: test for the goals that need the dev tools, else runtime (gpu with
# GPU=1; beam with BEAM=1, for serialize.runner: beam).
DEV_GOALS := test test-fast lint bench bench-scale bench-quality
LOCK := $(if $(filter $(DEV_GOALS),$(MAKECMDGOALS)),test,$(if $(filter 1,$(GPU)),gpu,$(if $(filter 1,$(BEAM)),beam,runtime)))
ifeq ($(GPU),1)
ifneq ($(filter $(DEV_GOALS),$(MAKECMDGOALS))$(filter 1,$(BEAM)),)
$(error GPU=1 installs requirements/gpu.txt, without Beam or dev tools: leave it off for $(or $(filter $(DEV_GOALS),$(MAKECMDGOALS)),BEAM=1))
endif
endif

# DVC stages run `python`: make it the virtualenv's.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install run test test-fast bench bench-scale bench-quality lint lock clean serve push pull report docs

install: $(STAMP)

# One stamp every goal goes through: `make -o .venv/.installed` (the tests' make) installs nothing.
$(STAMP): $(VENV)/.installed-$(LOCK)
	touch $@

# A lock, hashes checked, and the package itself from the tree. tensorflow-cpu and tensorflow
# (GPU) are one set of files: the lock's replaces the other. Installing a lock drops the other
# locks' stamps, so going back installs that one again (uv: a second or two when nothing changed).
# --compile-bytecode: uv writes no .pyc, and where PYTHONDONTWRITEBYTECODE is set (CI images,
# containers) every process would compile TensorFlow's sources again: 11.6 s to import it, not 4.5.
$(VENV)/.installed-%: requirements/%.txt pyproject.toml | $(UV)
	$(UV) pip uninstall --quiet --python $(BIN)/python $(if $(filter gpu,$*),tensorflow-cpu,tensorflow)
	$(UV) pip install --quiet --python $(BIN)/python --compile-bytecode --require-hashes --no-deps -r $<
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

# The virtualenv, and uv in it (installed by the virtualenv's pip, hashes checked).
$(UV): requirements/uv.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r $<
	touch $@

# uv resolves pyproject.toml and its build-system requirement (the package installs with
# --no-build-isolation: setuptools comes from the lock too) for CPython 3.11 on x86-64 Linux,
# wherever it runs. A lock's current pins are uv's preferences: only what pyproject.toml
# changed moves (UPGRADE=1: everything to its newest). test.txt is resolved first and the
# others take its versions: one lock installed over another changes no version.
BUILD_REQUIRES = $(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'
COMPILE = $(UV) pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--custom-compile-command "make lock" $(if $(filter 1,$(UPGRADE)),--upgrade)
lock: | $(UV)
	$(BUILD_REQUIRES) | $(COMPILE) pyproject.toml - --extra cpu --extra beam --group dev \
		--excludes requirements/cpu-excludes.txt -o requirements/test.txt
	$(BUILD_REQUIRES) | $(COMPILE) pyproject.toml - --extra cpu -c requirements/test.txt \
		--excludes requirements/cpu-excludes.txt -o requirements/runtime.txt
	$(BUILD_REQUIRES) | $(COMPILE) pyproject.toml - --extra cpu --extra beam -c requirements/test.txt \
		--excludes requirements/cpu-excludes.txt -o requirements/beam.txt
	$(BUILD_REQUIRES) | $(COMPILE) pyproject.toml - --extra gpu -c requirements/test.txt -o requirements/gpu.txt
	$(COMPILE) requirements/uv.in -o requirements/uv.txt

run: install
	$(BIN)/dvc repro

# pytest-xdist: one worker per core (at most 4: each holds TensorFlow and its own exported
# model and server); a file's tests stay on one worker, so its module fixtures are built once;
# files go out longest first (tests/conftest.py: LONGEST_FIRST).
XDIST = -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder
test: install
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

bench-scale: install
	$(BIN)/python -m bench scale

bench-quality: install
	$(BIN)/python -m bench quality

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
# deptry: the package and the stage scripts import only their runtime dependencies, and all
# of them; then every import anywhere, tests and benchmarks too, is declared (dev group allowed).
lint: install
	$(BIN)/ruff check amazonia stages tests bench
	$(BIN)/ruff format --check amazonia stages tests bench
	$(BIN)/zizmor --offline --persona=pedantic .github/workflows/
	$(BIN)/deptry .
	$(BIN)/deptry . --exclude '\.venv|\.git' --ignore DEP002,DEP004

docs: install
	$(BIN)/python -m amazonia.params_doc

clean:
	rm -rf $(VENV)
