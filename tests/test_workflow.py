"""The committed team set-up, by what it does: the pull-request workflow's shell steps run
here, in throw-away copies of the project, with GitHub's context filled in and only
``gh`` faked; the default DVC remote really receives a push.

What cannot run outside GitHub (``uses:`` actions, the trigger, permissions) is checked
as configuration."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from amazonia import report
from tests.conftest import (
    BIN,
    ROOT,
    S3_ACCESS_KEY_ID,
    S3_BUCKET,
    S3_SECRET,
    copy_project,
    ran_stages,
    run,
    tool_env,
)

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
# What the runner sets in every step's environment.
RUNNER_ENV = {
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "team/amazonia",
    "GITHUB_RUN_ID": "42",
}

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


BOT = "github-actions[bot]"
COMMENTS_PER_PAGE = 2  # small, so that finding the report comment must look past the first page
FAKE_GH = """#!{python}
# gh as the workflow's comment step calls it, over a JSON list of the pull request's comments.
import json, os, subprocess, sys
from pathlib import Path

state = Path({folder!r}) / "comments.json"
args = sys.argv[1:]
with open(state.parent / "gh.args", "a") as log:
    log.write(json.dumps(args) + "\\n")
comments = json.loads(state.read_text()) if state.exists() else []
option = lambda name: args[args.index(name) + 1] if name in args else None
path = next((a for a in args if a.startswith("repos/")), None)
if args[:2] == ["pr", "comment"]:
    assert args[2] == {pr!r}, args
    new_id = max([c["id"] for c in comments], default=0) + 1
    body = Path(option("--body-file")).read_text()
    comments.append({{"id": new_id, "user": {{"login": {bot!r}}}, "body": body}})
elif args[0] == "api" and option("--method") == "PATCH":
    comment_id = int(path.rsplit("/", 1)[1])
    assert path == "repos/" + os.environ["GITHUB_REPOSITORY"] + "/issues/comments/" + str(comment_id), path
    (comment,) = [c for c in comments if c["id"] == comment_id]
    assert comment["user"]["login"] == {bot!r}, "GitHub lets a token edit only its own comments"
    comment["body"] = Path(option("-F").removeprefix("body=@")).read_text()
elif args[0] == "api" and "--paginate" in args:
    assert path == "repos/" + os.environ["GITHUB_REPOSITORY"] + "/issues/" + {pr!r} + "/comments", path
    for start in range(0, len(comments), {per_page}):  # gh applies --jq to each page
        page = json.dumps(comments[start : start + {per_page}])
        jq = subprocess.run(["jq", "-r", option("--jq")], input=page, capture_output=True, text=True)
        assert jq.returncode == 0, jq.stderr
        sys.stdout.write(jq.stdout)
else:
    sys.exit("fake gh: not what the workflow calls: " + " ".join(args))
state.write_text(json.dumps(comments))
"""


def fake_tools(folder: Path) -> Path:
    """``make`` that runs this checkout's virtualenv (what conftest.make does), and ``gh``
    that keeps the pull request's comments in ``folder/comments.json`` (see :func:`comments`)."""
    folder.mkdir()
    real_make = shutil.which("make")
    assert real_make, "make is not installed"
    (folder / "make").write_text(
        f'#!/bin/sh\nexec {real_make} --no-print-directory -o .venv/.installed BIN="{BIN}" "$@"\n'
    )
    (folder / "gh").write_text(
        FAKE_GH.format(
            python=sys.executable, folder=str(folder), pr=PR_NUMBER, bot=BOT, per_page=COMMENTS_PER_PAGE
        )
    )
    for tool in ("make", "gh"):
        (folder / tool).chmod(0o755)
    return folder


def comments(tools: Path) -> list[dict]:
    """The pull request's comments as the fake ``gh`` left them."""
    path = tools / "comments.json"
    return json.loads(path.read_text()) if path.exists() else []


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
    assert workflow["permissions"] == {}  # nothing for jobs that do not ask
    assert job["permissions"] == {"contents": "read", "pull-requests": "write"}
    (checkout,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"]["fetch-depth"] == 0  # origin/<base> for the report
    # The token stays out of .git/config, which lies in the workspace the artifact step reads.
    assert checkout["with"]["persist-credentials"] is False


def test_zizmor_as_make_lint_runs_it_finds_nothing(tmp_path: Path) -> None:
    """No template injection, unpinned action or persisted credential (and zizmor's
    pedantic findings): the command ``make lint`` runs, run here so the suite keeps it so."""
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", "-o", ".venv/.installed", f"BIN={BIN}", "lint"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (command,) = [line for line in dry.splitlines() if "zizmor" in line]
    assert "--offline" in command and ".github/workflows/" in command
    result = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, env=tool_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr

    # And it does catch the old workflow's mistakes.
    bad = tmp_path / ".github/workflows/bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request\npermissions: {}\njobs:\n  a:\n    name: a\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - uses: actions/checkout@v4\n"
        "      - run: make report BASE=origin/${{ github.base_ref }}\n"
        "      - uses: actions/upload-artifact@v4\n        with:\n          path: .\n"
    )
    found = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--format", "json", str(bad.parent)],
        capture_output=True,
        text=True,
    )
    assert {finding["ident"] for finding in json.loads(found.stdout)} >= {
        "template-injection", "unpinned-uses", "artipacked"
    }  # fmt: skip


# --- what the steps do ------------------------------------------------------------------------


@pytest.fixture
def pull_request(team_history: Path, tmp_path: Path) -> Path:
    """A clone of ``team_history`` as actions/checkout leaves it for the pull request: its
    last commit (image size 24, run and committed) checked out, no outputs, and
    ``origin/<base>`` the commit before (the team's baseline run)."""
    repo = tmp_path / "repo"
    run(["git", "clone", "-q", str(team_history), str(repo)], tmp_path)
    run(["git", "update-ref", f"refs/remotes/origin/{BASE_REF}", "HEAD~1"], repo)
    return repo


@pytest.mark.slow
@pytest.mark.parametrize("remote", [False, True], ids=["no-remote", "s3-remote"])
def test_every_step_that_runs_succeeds_and_the_pipeline_runs_once(
    workflow: dict,
    job: dict,
    remote: bool,
    tmp_path: Path,
    team_history: Path,
    pull_request: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Each shell step GitHub would run, in order, for real (make, dvc, the report), over a
    pull request whose run is already stored: with no remote, in the runner's DVC cache (the
    pipeline step restores every stage from DVC's run-cache); with the remote secrets set, on
    a real S3-compatible endpoint and nowhere else (``dvc repro --pull`` fetches it all). Then
    every output is in the workspace, and the comment is the report ``make report`` built."""
    checkout = pull_request
    shutil.copytree(team_history / ".dvc/cache", checkout / ".dvc/cache")
    secrets = NO_SECRETS
    if remote:
        endpoint = request.getfixturevalue("s3_endpoint")
        secrets = {
            "DVC_REMOTE_URL": f"s3://{S3_BUCKET}/cache",
            "DVC_REMOTE_ENDPOINTURL": endpoint,
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            **NO_SECRETS,
        }
        # What an earlier push left on the remote; the runner starts with no cache.
        credentials = {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
        dvc = str(BIN / "dvc")
        run([dvc, "remote", "add", "--local", "earlier", secrets["DVC_REMOTE_URL"]], checkout)
        run([dvc, "remote", "modify", "--local", "earlier", "endpointurl", endpoint], checkout)
        run([dvc, "push", "-q", "-r", "earlier"], checkout, env_extra=credentials)
        run([dvc, "remote", "remove", "--local", "earlier"], checkout)
        shutil.rmtree(checkout / ".dvc/cache")
    values = context(secrets)
    env = job_env(workflow, job, values)
    tools = fake_tools(tmp_path / "tools")
    ran = []
    for step in job["steps"]:
        if not runs(step, env) or "run" not in step:
            continue
        result = run_step(
            step, checkout, env, values, tools, GITHUB_PATH=str(tmp_path / "github_path"), **RUNNER_ENV
        )
        assert result.returncode == 0, f"step {step.get('name')!r}:\n{result.stdout}\n{result.stderr}"
        ran.append(step.get("name"))
        if step.get("name", "").startswith("Run the pipeline"):
            # Pulled, every output is there and nothing runs. From the run-cache, all but
            # smoke_check's published folder, a persist output, which DVC never restores from
            # it: smoke_check checks the restored candidate again and republishes it.
            assert ran_stages(result.stdout) == (set() if remote else {"smoke_check"}), result.stdout
            assert json.loads(run([str(BIN / "dvc"), "status", "--json"], checkout).stdout) == {}
    pipeline = [name for name in ran if name.startswith("Run the pipeline")]
    assert len(pipeline) == 1, ran
    assert ("Push the outputs for reviewers" in ran) == remote, ran
    assert ("Configure the DVC remote from secrets" in ran) == remote, ran
    assert ran[-2:] == ["Build the report", "Post or update the report comment"]
    built = (checkout / "report.md").read_text()
    assert built.startswith(f"{report.COMMENT_MARKER}\n# Pipeline report: base `origin/{BASE_REF}`")
    assert [c["body"] for c in comments(tools)] == [built]


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_report_steps_keep_one_report_comment_per_pull_request(
    workflow: dict, job: dict, tmp_path: Path, checkout: Path
) -> None:
    """``make report`` with BASE=origin/<base> for real (over the committed metrics), then the
    comment step with a fake ``gh`` over the pull request's comments, on two pushes: the
    first push adds the report comment, the second edits it; nobody else's comment moves."""
    if not shutil.which("jq"):
        pytest.skip("jq not installed: the fake gh evaluates the step's --jq filter with it")
    values = context(NO_SECRETS)
    env = job_env(workflow, job, values)
    tools = fake_tools(tmp_path / "tools")
    others = [
        {"id": 1, "user": {"login": "alice"}, "body": f"{report.COMMENT_MARKER} quoted by a person"},
        {"id": 2, "user": {"login": BOT}, "body": "another workflow's comment"},
        {"id": 3, "user": {"login": "bob"}, "body": "looks good"},
    ]
    (tools / "comments.json").write_text(json.dumps(others))
    build, post = step_named(job, "Build the report"), step_named(job, "Post or update the report comment")

    built = run_step(build, checkout, env, values, tools, **RUNNER_ENV)
    assert built.returncode == 0, built.stderr
    first = (checkout / report.parse_args(["--base", BASE_REF]).out).read_text()
    assert first.startswith(f"{report.COMMENT_MARKER}\n# Pipeline report: base `origin/{BASE_REF}`")
    assert ["params.yaml", "train.learning_rate", "0.001", "0.003"] in [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in first.splitlines()
        if line.startswith("|")
    ]
    # The plots the report points to are the artifact the upload step takes.
    (upload,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert runs(upload, env)
    assert (checkout / upload["with"]["path"] / "index.html").is_file()
    assert upload["with"]["name"] == report.ARTIFACT and f"`{report.ARTIFACT}` artifact" in first
    assert "https://github.com/team/amazonia/actions/runs/42" in first

    posted = run_step(post, checkout, env, values, tools, **RUNNER_ENV)
    assert posted.returncode == 0, posted.stderr
    assert comments(tools) == [*others, {"id": 4, "user": {"login": BOT}, "body": first}]

    # The next push: another report, the same comment.
    (checkout / "report.md").write_text(first.replace("Pipeline report", "Pipeline report, second push"))
    posted = run_step(post, checkout, env, values, tools, **RUNNER_ENV)
    assert posted.returncode == 0, posted.stderr
    assert comments(tools) == [
        *others,
        {"id": 4, "user": {"login": BOT}, "body": (checkout / "report.md").read_text()},
    ]


@pytest.mark.slow
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
