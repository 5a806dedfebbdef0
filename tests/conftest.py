"""Shared fixtures: the reference data, and throw-away copies of this project as real
git + DVC repositories in which tests run real ``dvc repro``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
BIN = Path(sys.executable).parent

# Small enough for seconds per stage, large enough for every split to get chips.
TINY_PARAMS = {
    "data": {"n_images": 60, "seed": 7},
    "serialize": {"image_size": 32, "shard_mb": 0.05, "workers": 2},
}


def tool_env(**extra: str) -> dict[str, str]:
    """The environment stages run in: this virtualenv first on PATH, quiet TF and DVC."""
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, returning its output; on an unexpected failure show it all."""
    result = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def set_params(repo: Path, updates: dict) -> None:
    """Merge ``updates`` (nested dict) into the repo's params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in updates.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def ran_stages(output: str) -> set[str]:
    """The stages DVC reports it ran, from ``dvc repro``'s own output."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="session")
def reference() -> Path:
    if not (REFERENCE / "KagglePlanetMCML.csv").is_file():
        pytest.fail(f"reference data not found at {REFERENCE} (expected ../shared/reference beside the repo)")
    return REFERENCE


def copy_project(dest: Path) -> Path:
    """Copy the tracked (and untracked, not ignored) files of this checkout into a new
    git repository at ``dest`` with one commit."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for generated in ("dvc.lock",):
        (dest / generated).unlink(missing_ok=True)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "copy of the project"], dest)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh git + DVC copy of the project with tiny params, nothing run yet."""
    repo = copy_project(tmp_path / "repo")
    set_params(repo, TINY_PARAMS)
    run(["git", "commit", "-qam", "tiny params"], repo)
    return repo


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run of the whole pipeline, shared by read-only tests."""
    repo = copy_project(tmp_path_factory.mktemp("pipeline") / "repo")
    set_params(repo, TINY_PARAMS)
    run(["git", "commit", "-qam", "tiny params"], repo)
    run([str(BIN / "dvc"), "repro"], repo)
    return repo
