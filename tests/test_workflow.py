"""The committed team set-up, by what it does: the pull-request workflow's shell steps run
here, in throw-away copies of the project, with GitHub's context filled in and only
``gh`` faked; the default DVC remote really receives a push.

What cannot run outside GitHub (``uses:`` actions, the trigger, permissions) is checked
as configuration."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from amazonia import report
from tests.conftest import BIN, ROOT, S3_ACCESS_KEY_ID, S3_BUCKET, S3_SECRET, copy_project, run, tool_env

WORKFLOW = ROOT / ".github/workflows/pr-report.yml"
BASE_REF = "main"
PR_NUMBER = "17"
# What a pull request's run sees for the remote secrets, when the team has set them.
REMOTE_SECRETS = {
    "DVC_REMOTE_URL": "s3://amazonia-ci/cache",
    "DVC_REMOTE_ENDPOINTURL": "http://127.0.0.1:9",
    "AWS_ACCESS_KEY_ID": "ci-key-id",
    "AWS_SECRET_ACCESS_KEY": f"ci-secret-{os.urandom(8).hex()}",
    "GITHUB_TOKEN": "gh-token",
}
NO_SECRETS = {"GITHUB_TOKEN": "gh-token"}  # forks, or no remote set up: GitHub gives ""

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
ENV_TEST = re.compile(r"^env\.(\w+)\s*(==|!=)\s*''$")


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def job(workflow: dict) -> dict:
    (job,) = workflow["jobs"].values()
    return job


def step_named(job: dict, name: str) -> dict:
    (step,) = [s for s in job["steps"] if s.get("name") == name]
    return step


def context(secrets: dict[str, str]) -> dict[str, str]:
    """The expressions the workflow uses, as GitHub fills them for pull request PR_NUMBER."""
    values = {
        "github.base_ref": BASE_REF,
        "github.event.pull_request.number": PR_NUMBER,
    }
    secret_names = {m for m in EXPRESSION.findall(WORKFLOW.read_text()) if m.startswith("secrets.")}
    values.update({name: secrets.get(name.removeprefix("secrets."), "") for name in secret_names})
    return values


def expand(text: str, values: dict[str, str]) -> str:
    """``${{ expr }}`` replaced as GitHub does; an expression this test cannot fill fails it."""

    def value(match: re.Match) -> str:
        if match[1] not in values:
            pytest.fail(f"{WORKFLOW.name}: no value for ${{{{ {match[1]} }}}}; teach this test about it")
        return values[match[1]]

    return EXPRESSION.sub(value, text)


def job_env(workflow: dict, job: dict, values: dict[str, str]) -> dict[str, str]:
    """The workflow's and the job's env, expanded."""
    env = {**workflow.get("env", {}), **job.get("env", {})}
    return {name: expand(str(v), values) for name, v in env.items()}


def runs(step: dict, env: dict[str, str]) -> bool:
    """Whether GitHub runs ``step`` (all earlier steps having succeeded) with this env."""
    condition = expand(str(step.get("if", "success()")), {}).strip()
    if condition in ("success()", "always()"):
        return True
    test = ENV_TEST.match(condition)
    if not test:
        pytest.fail(f"{WORKFLOW.name}: cannot evaluate `if: {condition}`; teach this test about it")
    name, operator = test.groups()
    return (env.get(name, "") == "") == (operator == "==")


def fake_tools(folder: Path, *, dry_make: bool = False) -> Path:
    """``make`` that runs this checkout's virtualenv (what conftest.make does), and ``gh``
    that keeps what it would post in ``folder/posted.md`` and its arguments in ``folder/gh.args``."""
    folder.mkdir()
    real_make = shutil.which("make")
    assert real_make, "make is not installed"
    dry = "-n " if dry_make else ""
    (folder / "make").write_text(
        f'#!/bin/sh\nexec {real_make} {dry}--no-print-directory -o .venv/.installed BIN="{BIN}" "$@"\n'
    )
    (folder / "gh").write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{folder}/gh.args"\n'
        "while [ $# -gt 0 ]; do\n"
        f'  if [ "$1" = --body-file ]; then cp "$2" "{folder}/posted.md"; fi\n'
        "  shift\n"
        "done\n"
    )
    for tool in ("make", "gh"):
        (folder / tool).chmod(0o755)
    return folder


def run_step(step: dict, repo: Path, env: dict[str, str], values: dict[str, str], tools: Path, **extra: str):
    """Run a step's ``run:`` script as GitHub's default shell does (bash -eo pipefail)."""
    script = expand(step["run"], values)
    step_env = {name: expand(str(v), values) for name, v in step.get("env", {}).items()}
    full_env = tool_env(**env, **step_env, **extra)
    full_env.pop("PWD", None)
    full_env["PATH"] = f"{tools}{os.pathsep}{full_env['PATH']}"
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=repo,
        env=full_env,
        capture_output=True,
        text=True,
    )


def make_variable(repo: Path, name: str) -> str:
    """A variable of the Makefile as make itself expands it in ``repo``, no overrides."""
    printer = "print-%:\n\t@echo $($*)\n"
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", f"print-{name}"],
        cwd=repo,
        input=printer,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the project as actions/checkout leaves it with fetch-depth 0: the pull
    request's commit, and ``origin/<base>`` one commit behind, with other params."""
    repo = copy_project(tmp_path / "repo")
    run(["git", "update-ref", f"refs/remotes/origin/{BASE_REF}", "HEAD"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["learning_rate"] = 0.003
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", "the pull request: learning rate 0.003"], repo)
    return repo


# --- configuration that only GitHub runs ----------------------------------------------------


def test_it_runs_on_pull_requests_with_full_history(workflow: dict, job: dict) -> None:
    # PyYAML reads the bare key `on` as True (YAML 1.1).
    assert "pull_request" in workflow.get("on", workflow.get(True))
    assert workflow["permissions"]["pull-requests"] == "write"
    (checkout,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"]["fetch-depth"] == 0  # origin/<base> for the report


# --- what the steps do ------------------------------------------------------------------------


@pytest.mark.parametrize("remote", [False, True], ids=["no-remote", "s3-remote"])
def test_every_step_that_runs_succeeds_and_the_pipeline_runs_once(
    workflow: dict, job: dict, remote: bool, tmp_path: Path, checkout: Path, request: pytest.FixtureRequest
) -> None:
    """Each shell step GitHub would run, in order, with make in dry-run mode (no pipeline
    is computed; a missing target or a shell error still fails) and dvc for real, against
    a real S3-compatible endpoint when the remote secrets are set."""
    secrets = NO_SECRETS
    if remote:
        secrets = {
            "DVC_REMOTE_URL": f"s3://{S3_BUCKET}/cache",
            "DVC_REMOTE_ENDPOINTURL": request.getfixturevalue("s3_endpoint"),
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            **NO_SECRETS,
        }
    values = context(secrets)
    env = job_env(workflow, job, values)
    tools = fake_tools(tmp_path / "tools", dry_make=True)
    ran = []
    for step in job["steps"]:
        if not runs(step, env) or "run" not in step:
            continue
        if step.get("name") == "Run the pipeline, pulling what the remote holds":
            # Reaches the remote (its run-cache) for the first stage, whose deps are all in git,
            # but computes nothing: a dry run of later stages needs data/raw to exist.
            assert step["run"].strip() == "dvc repro --pull", "update this test's dry run"
            step = {**step, "run": "dvc repro --pull --dry ingest"}
        result = run_step(step, checkout, env, values, tools, GITHUB_PATH=str(tmp_path / "github_path"))
        assert result.returncode == 0, f"step {step.get('name')!r}:\n{result.stdout}\n{result.stderr}"
        ran.append(step.get("name"))
    pipeline = [name for name in ran if name.startswith("Run the pipeline")]
    assert len(pipeline) == 1, ran
    assert ("Push the outputs for reviewers" in ran) == bool(secrets.get("DVC_REMOTE_URL")), ran
    assert ("Configure the DVC remote from secrets" in ran) == bool(secrets.get("DVC_REMOTE_URL")), ran
    assert ran[-2:] == ["Build the report", "Post the report as a PR comment"]


def test_install_step_puts_the_makefiles_virtualenv_on_path(
    workflow: dict, job: dict, tmp_path: Path, checkout: Path
) -> None:
    values = context(NO_SECRETS)
    github_path = tmp_path / "github_path"
    result = run_step(
        step_named(job, "Install (README)"),
        checkout,
        job_env(workflow, job, values),
        values,
        fake_tools(tmp_path / "tools"),
        GITHUB_PATH=str(github_path),
    )
    assert result.returncode == 0, result.stderr
    (added,) = github_path.read_text().splitlines()
    # Later steps call `dvc` and stages call `python`: they must find the ones make installs.
    assert Path(added).resolve() == Path(make_variable(checkout, "BIN")).resolve()


def test_remote_step_keeps_the_credentials_out_of_git(
    workflow: dict, job: dict, tmp_path: Path, checkout: Path
) -> None:
    values = context(REMOTE_SECRETS)
    step = step_named(job, "Configure the DVC remote from secrets")
    env = job_env(workflow, job, values)
    assert runs(step, env) and not runs(step, job_env(workflow, job, context(NO_SECRETS)))
    tracked = (checkout / ".dvc/config").read_text()

    result = run_step(step, checkout, env, values, fake_tools(tmp_path / "tools"))
    assert result.returncode == 0, result.stderr

    def dvc_config(key: str) -> str:
        return run([str(BIN / "dvc"), "config", key], checkout).stdout.strip()

    assert dvc_config("core.remote") == "ci"
    assert dvc_config("remote.ci.url") == REMOTE_SECRETS["DVC_REMOTE_URL"]
    assert dvc_config("remote.ci.endpointurl") == REMOTE_SECRETS["DVC_REMOTE_ENDPOINTURL"]
    assert dvc_config("remote.ci.secret_access_key") == REMOTE_SECRETS["AWS_SECRET_ACCESS_KEY"]
    # Only the git-ignored .dvc/config.local changed: nothing of it can be committed.
    assert (checkout / ".dvc/config").read_text() == tracked
    assert run(["git", "status", "--porcelain", "--ignored=no"], checkout).stdout == ""
    assert REMOTE_SECRETS["AWS_SECRET_ACCESS_KEY"] in (checkout / ".dvc/config.local").read_text()
    assert run(["git", "check-ignore", "-q", ".dvc/config.local"], checkout, check=False).returncode == 0


def test_report_steps_post_the_report_that_make_report_writes(
    workflow: dict, job: dict, tmp_path: Path, checkout: Path
) -> None:
    """``make report BASE=origin/<base>`` for real (over the committed metrics), then the
    comment step with a fake ``gh``: it posts that very report, with the plots' artifact."""
    values = context(NO_SECRETS)
    env = job_env(workflow, job, values)
    tools = fake_tools(tmp_path / "tools")
    github = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "team/amazonia"}
    github["GITHUB_RUN_ID"] = "42"

    built = run_step(step_named(job, "Build the report"), checkout, env, values, tools, **github)
    assert built.returncode == 0, built.stderr
    assert f"# Pipeline report: base `origin/{BASE_REF}`" in built.stdout
    assert "| `train.learning_rate` | 0.001 | 0.003 |" in built.stdout

    posted = run_step(step_named(job, "Post the report as a PR comment"), checkout, env, values, tools)
    assert posted.returncode == 0, posted.stderr
    assert (tools / "gh.args").read_text().splitlines()[:3] == ["pr", "comment", PR_NUMBER]
    body = (tools / "posted.md").read_text()
    assert body and body in built.stdout
    assert body == (checkout / report.parse_args(["--base", BASE_REF]).out).read_text()

    # The plots the report points to are the artifact the upload step takes.
    (upload,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert runs(upload, env)
    assert (checkout / upload["with"]["path"] / "index.html").is_file()
    assert f"`{upload['with']['name']}` artifact" in body
    assert "https://github.com/team/amazonia/actions/runs/42" in body


def test_default_remote_is_a_folder_beside_the_checkout(tmp_path: Path) -> None:
    """A push with the committed configuration lands beside the clone, not in it."""
    repo = copy_project(tmp_path / "team" / "repo")
    (repo / "probe.txt").write_text("shared through the default remote\n")
    dvc = str(BIN / "dvc")
    run([dvc, "add", "-q", "probe.txt"], repo)
    run([dvc, "push", "-q"], repo)
    md5 = yaml.safe_load((repo / "probe.txt.dvc").read_text())["outs"][0]["md5"]
    stored = [p for p in tmp_path.rglob(md5[2:]) if p.is_file() and repo not in p.parents]
    assert [p.relative_to(tmp_path).parts[:2] for p in stored] == [("team", "amazonia-dvc-storage")]
    assert stored[0].read_text() == "shared through the default remote\n"
    config = (ROOT / ".dvc/config").read_text()
    for secret in ("access_key_id", "secret_access_key", "password", "session_token"):
        assert secret not in config, f".dvc/config holds {secret}"
