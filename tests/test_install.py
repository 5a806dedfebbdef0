"""The install: requirements/*.txt lock pyproject.toml's pins with hashes, each goal of the
Makefile installs the lock it needs and nothing more, hash-checked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

REQUIREMENTS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What each lock holds, by pyproject.toml's groups (see `make lock`).
LOCKS = {
    "runtime": ["dependencies", "cpu"],
    "beam": ["dependencies", "cpu", "beam"],
    "gpu": ["dependencies", "gpu"],
    "test": ["dependencies", "cpu", "beam", "dev"],
}
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]+\])?==(?P<version>[^\s;]+)$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """``{name: (version, hashes)}`` of a hashed requirements file; fails on any other line."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        pin = PIN.match(requirement)
        assert pin, f"{path.name}: {requirement!r} is not pinned with =="
        assert options and all(HASH.match(o) for o in options), f"{path.name}: {requirement} has no hash"
        pins[normalized(pin["name"])] = (pin["version"], options)
    return pins


def declared(group: str) -> dict[str, str]:
    """``{name: version}`` of a pyproject.toml group: dependencies, an extra, or a dependency group."""
    if group == "dependencies":
        requirements = PYPROJECT["project"]["dependencies"]
    elif group in PYPROJECT["project"]["optional-dependencies"]:
        requirements = PYPROJECT["project"]["optional-dependencies"][group]
    else:
        requirements = PYPROJECT["dependency-groups"][group]
    pins = {}
    for requirement in requirements:
        pin = PIN.match(requirement)
        assert pin, f"pyproject.toml: {requirement!r} is not pinned exactly"
        pins[normalized(pin["name"])] = pin["version"]
    return pins


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_each_lock_pins_what_pyproject_declares_and_its_build_backend_with_hashes(lock: str) -> None:
    """A pyproject.toml edit without `make lock` fails here."""
    pins = read_lock(REQUIREMENTS / f"{lock}.txt")
    wanted = {name: version for group in LOCKS[lock] for name, version in declared(group).items()}
    for requirement in PYPROJECT["build-system"]["requires"]:  # installed --no-build-isolation
        pin = PIN.match(requirement)
        wanted[normalized(pin["name"])] = pin["version"]
    assert {name: pins.get(name, (None,))[0] for name in wanted} == wanted, f"run `make lock`: {lock}.txt"


def test_locks_agree_on_every_shared_version_and_hold_one_tensorflow() -> None:
    """One lock installed over another changes no version; tensorflow-cpu and tensorflow
    (GPU) share their files, so a lock holds exactly one."""
    locks = {name: read_lock(REQUIREMENTS / f"{name}.txt") for name in LOCKS}
    test = locks["test"]
    for name, pins in locks.items():
        moved = {p: (v, test[p][0]) for p, (v, _) in pins.items() if p in test and test[p][0] != v}
        assert not moved, f"{name}.txt and test.txt disagree: {moved}"
        flavours = {"tensorflow", "tensorflow-cpu"} & set(pins)
        assert flavours == ({"tensorflow"} if name == "gpu" else {"tensorflow-cpu"}), name
    # The runtime lock is what `make run` installs: no test, lint or Beam tooling (h5py,
    # psutil and requests, which tests import too, come with Keras, DVC and TensorFlow).
    tools = (set(declared("dev")) | set(declared("beam"))) - {"h5py", "psutil", "requests"}
    assert not tools & set(locks["runtime"]), tools & set(locks["runtime"])
    assert set(locks["runtime"]) < set(locks["beam"]) < set(locks["test"])


# Keras imports each whenever it is installed, at the start of every TensorFlow process, for
# nothing amazonia uses: scikit-learn (keras/src/wrappers/fixes.py, SciPy with it) and pandas
# (keras/src/trainers/data_adapters/array_slicing.py, 0.3 s of CPU; amazonia reads its CSVs
# with the csv module).
@pytest.mark.parametrize("package", ["scikit-learn", "pandas"])
def test_no_lock_holds_what_keras_imports_for_nothing(package: str) -> None:
    holding = [name for name in LOCKS if package in read_lock(REQUIREMENTS / f"{name}.txt")]
    assert not holding, f"{package} is in the {holding} locks: their `# via` lines say what pulls it in"


def test_uv_is_locked_with_hashes_from_its_input() -> None:
    (pin,) = [line for line in (REQUIREMENTS / "uv.in").read_text().splitlines() if PIN.match(line)]
    locked = read_lock(REQUIREMENTS / "uv.txt")
    assert {name: version for name, (version, _) in locked.items()} == {"uv": PIN.match(pin)["version"]}


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    """What make sees in a clone with no .venv yet."""
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(REQUIREMENTS, tmp_path / "requirements")
    return tmp_path


def planned(repo: Path, *goal: str) -> subprocess.CompletedProcess:
    """The commands ``make goal...`` would run (``make -n``)."""
    return subprocess.run(
        ["make", "-n", "--no-print-directory", *goal], cwd=repo, capture_output=True, text=True
    )


def installs(plan: str) -> list[str]:
    """The ``uv pip install`` commands of a plan, reduced to their options and files."""
    return [
        " ".join(word for word in line.split() if word[0] == "-" or word.endswith(".txt") or word == ".")
        for line in plan.splitlines()
        if " pip install " in line and "/uv " in line
    ]


@pytest.mark.parametrize(
    ("goal", "lock"),
    [
        (["run"], "runtime"),
        (["install"], "runtime"),
        (["serve"], "runtime"),
        (["run", "GPU=1"], "gpu"),
        (["serve", "GPU=1"], "gpu"),
        (["install", "BEAM=1"], "beam"),
        (["test"], "test"),
        (["test-fast"], "test"),
        (["lint"], "test"),
        (["run", "test"], "test"),
    ],
)
def test_each_goal_installs_its_lock_hash_checked_and_the_package_without_dependencies(
    fresh_clone: Path, goal: list[str], lock: str
) -> None:
    plan = planned(fresh_clone, *goal)
    assert plan.returncode == 0, plan.stderr
    assert installs(plan.stdout) == [
        f"--quiet --python --compile-bytecode --require-hashes --no-deps -r requirements/{lock}.txt",
        "--quiet --python --no-deps --no-build-isolation -e .",
    ]
    # uv itself comes from its hashed lock, through the virtualenv's pip.
    assert re.search(r"-m pip install .*--require-hashes .*-r requirements/uv\.txt", plan.stdout)
    # The other TensorFlow goes first: both wheels write the same files.
    other = "tensorflow-cpu" if lock == "gpu" else "tensorflow"
    assert re.search(rf"uv pip uninstall .* {other}$", plan.stdout, re.M), plan.stdout


def test_a_lock_installs_again_only_when_it_changes_or_another_was_installed_since(fresh_clone: Path) -> None:
    """Real make, over a .venv whose uv only logs what it is asked."""
    venv = fresh_clone / ".venv"
    (venv / "bin").mkdir(parents=True)
    log = fresh_clone / "uv.log"
    uv = venv / "bin" / "uv"
    uv.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    uv.chmod(0o755)

    def installed(*goal: str) -> list[str]:
        before = log.read_text() if log.exists() else ""
        result = subprocess.run(
            ["make", "--no-print-directory", *goal], cwd=fresh_clone, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        lines = log.read_text()[len(before) :].splitlines()
        return [re.search(r"-r requirements/(\w+)\.txt", line)[1] for line in lines if " -r " in line]

    assert installed("install") == ["runtime"]
    assert installed("install") == []
    assert installed("install", "GPU=1") == ["gpu"]  # and back: tensorflow-cpu again
    assert installed("install") == ["runtime"]
    later = (venv / ".installed").stat().st_mtime + 10
    os.utime(fresh_clone / "requirements/runtime.txt", (later, later))  # `make lock`, or a pull
    assert installed("install") == ["runtime"]
    assert installed("install", "BEAM=1") == ["beam"]
    assert installed("install", "BEAM=1") == []


@pytest.mark.parametrize("goal", [["test", "GPU=1"], ["lint", "GPU=1"], ["run", "GPU=1", "BEAM=1"]])
def test_gpu_with_what_the_gpu_lock_lacks_is_refused_naming_why(fresh_clone: Path, goal: list[str]) -> None:
    plan = planned(fresh_clone, *goal)
    assert plan.returncode != 0
    assert "GPU=1 installs requirements/gpu.txt, without Beam or dev tools" in plan.stderr
