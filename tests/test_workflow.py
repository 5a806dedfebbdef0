"""The committed team set-up, checked without running anything: the pull-request workflow
calls the same make targets as a developer, and the default DVC remote is a folder beside
the checkout with no credentials in git."""

from __future__ import annotations

import re

import pytest
import yaml
from configobj import ConfigObj

from amazonia import report
from tests.conftest import ROOT

WORKFLOW = ROOT / ".github/workflows/pr-report.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def steps(workflow: dict) -> list[dict]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def commands(steps: list[dict]) -> str:
    """Every shell line the workflow runs."""
    return "\n".join(step.get("run", "") for step in steps)


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_it_runs_on_pull_requests_with_full_history(workflow: dict, steps: list[dict]) -> None:
    # PyYAML reads the bare key `on` as True (YAML 1.1).
    assert "pull_request" in workflow.get("on", workflow.get(True))
    assert workflow["permissions"]["pull-requests"] == "write"
    (checkout,) = [s for s in steps if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"]["fetch-depth"] == 0


def test_it_uses_the_developers_make_targets(steps: list[dict]) -> None:
    lines = commands(steps)
    assert re.search(r"^make install$", lines, re.M), "install with the README's command"
    assert re.search(r"^make run$", lines, re.M)
    assert "make report BASE=origin/${{ github.base_ref }}" in lines
    used = set(re.findall(r"\bmake (\w+)", lines))
    assert used <= make_targets(), f"targets missing from the Makefile: {used - make_targets()}"
    makefile = (ROOT / "Makefile").read_text()
    assert "-m amazonia.report --base $(BASE)" in makefile
    # Later steps call dvc directly: the virtualenv must be on PATH for them and the stages.
    assert '.venv/bin" >> "$GITHUB_PATH"' in lines


def test_it_pulls_from_a_remote_only_when_one_is_configured(steps: list[dict]) -> None:
    by_command = {step.get("run", "").strip(): step for step in steps}
    assert by_command["dvc repro --pull"]["if"].replace(" ", "") == "env.DVC_REMOTE_URL!=''"
    assert by_command["make run"]["if"].replace(" ", "") == "env.DVC_REMOTE_URL==''"
    (configure,) = [s for s in steps if "dvc remote add" in s.get("run", "")]
    # Credentials come from secrets and only ever go to the git-ignored .dvc/config.local.
    for line in configure["run"].splitlines():
        if line.strip().startswith("dvc remote"):
            assert "--local" in line, line
    assert all(value.startswith("${{ secrets.") for value in configure["env"].values())


def test_it_posts_the_report_file_the_report_writes(steps: list[dict]) -> None:
    (post,) = [s for s in steps if "gh pr comment" in s.get("run", "")]
    assert post["env"]["GH_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    defaults = report.parse_args(["--base", "main"])
    assert f"--body-file {defaults.out}" in post["run"]
    (upload,) = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"] == str(defaults.plots_dir)
    assert upload["with"]["name"] == "dvc-plots"  # the name the report's Plots section gives


def test_default_remote_is_a_folder_beside_the_checkout() -> None:
    config = ConfigObj(str(ROOT / ".dvc/config"))
    name = config["core"]["remote"]
    url = config[f'remote "{name}"']["url"]
    # DVC resolves a relative url from the .dvc/ folder.
    storage = (ROOT / ".dvc" / url).resolve()
    assert storage.parent == ROOT.parent, f"{url} should land beside the checkout, not in it"
    secrets = {"access_key_id", "secret_access_key", "password", "session_token"}
    for section in config.sections:
        assert not secrets & set(config[section]), f".dvc/config [{section}] holds credentials"
