"""Working as a team, under real DVC: sharing a run through a remote (the default local
folder and an S3-compatible endpoint), the run-cache, and experiments.

Every test starts from ``team_history`` (two committed tiny runs), so no test here runs
the whole pipeline. The train stage has no persist outputs, so DVC's run-cache covers it
(see the comment in dvc.yaml)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    BIN,
    S3_ACCESS_KEY_ID,
    S3_BUCKET,
    S3_SECRET,
    make,
    ran_stages,
    run,
)

DVC = str(BIN / "dvc")

pytestmark = pytest.mark.slow


def dvc(repo: Path, *args: str) -> str:
    """Run ``dvc ARGS`` in ``repo``; its stdout."""
    return run([DVC, *args], repo).stdout


def lock_outputs(repo: Path) -> list[str]:
    """Every output path dvc.lock records."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]


def assert_in_sync(repo: Path) -> None:
    """Every output is in the workspace, ``dvc status`` is clean and ``dvc repro`` runs nothing."""
    missing = [path for path in lock_outputs(repo) if not (repo / path).exists()]
    assert not missing, f"{repo}: outputs missing: {missing}"
    assert json.loads(dvc(repo, "status", "--json")) == {}
    assert ran_stages(dvc(repo, "repro")) == set()


def clone(origin: Path, name: str, configure: Callable[[Path], None]) -> Path:
    """A fresh git clone of ``origin``'s commit beside it, set up like a new teammate's."""
    dest = origin.parent / name
    run(["git", "clone", "-q", str(origin), str(dest)], origin.parent)
    configure(dest)
    return dest


def share_a_run(origin: Path, configure: Callable[[Path], None], pull_clone: bool = True) -> None:
    """The team scenario: A pushes its committed run; B pulls it (unless not
    ``pull_clone``); C reproduces with --pull."""
    configure(origin)
    make("push", origin)

    if pull_clone:
        b = clone(origin, "b", configure)
        make("pull", b)
        assert_in_sync(b)

    c = clone(origin, "c", configure)
    stdout = dvc(c, "repro", "--pull")
    assert ran_stages(stdout) == set(), (
        f"`dvc repro --pull` should restore every stage from the remote:\n{stdout}"
    )
    assert_in_sync(c)


def test_default_local_remote_shares_a_run_between_clones(history_copy: Path, tmp_path: Path) -> None:
    origin = history_copy
    # The committed default, unchanged: a folder beside the clone. Here the clones live in
    # tmp_path/team/, so it lands in tmp_path/team/amazonia-dvc-storage, never the real one.
    url = dvc(origin, "config", "remote.local.url").strip()
    storage = (origin / ".dvc" / url).resolve()
    assert storage == origin.parent / "amazonia-dvc-storage", f"{url} should resolve beside the clone"
    assert tmp_path in storage.parents
    assert dvc(origin, "config", "core.remote").strip() == "local"

    share_a_run(origin, configure=lambda repo: None)
    assert any((storage / "files" / "md5").rglob("*")), f"nothing was pushed to {storage}"


def configure_s3(repo: Path) -> None:
    """How each teammate sets up the committed S3 remote: credentials only in .dvc/config.local."""
    run([DVC, "remote", "modify", "--local", "s3remote", "access_key_id", S3_ACCESS_KEY_ID], repo)
    run([DVC, "remote", "modify", "--local", "s3remote", "secret_access_key", S3_SECRET], repo)
    run([DVC, "remote", "default", "--local", "s3remote"], repo)


def test_s3_compatible_remote_shares_a_run_between_clones(history_copy: Path, s3_endpoint: str) -> None:
    import boto3

    origin = history_copy
    # What the team commits: bucket and endpoint, no secrets.
    run([DVC, "remote", "add", "s3remote", f"s3://{S3_BUCKET}/amazonia"], origin)
    run([DVC, "remote", "modify", "s3remote", "endpointurl", s3_endpoint], origin)
    run(["git", "commit", "-qam", "dvc: S3-compatible remote"], origin)

    # B's `make pull` is `dvc pull` whatever the remote: the local remote's test has it.
    share_a_run(origin, configure_s3, pull_clone=False)

    for repo in (origin, origin.parent / "c"):
        assert S3_SECRET not in (repo / ".dvc/config").read_text()
        assert S3_SECRET in (repo / ".dvc/config.local").read_text()
        assert run(["git", "check-ignore", "-q", ".dvc/config.local"], repo, check=False).returncode == 0
    assert S3_SECRET not in run(["git", "log", "-p", "--all"], origin).stdout
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_ACCESS_KEY_ID,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )
    assert s3.list_objects_v2(Bucket=S3_BUCKET, Prefix="amazonia/")["KeyCount"] > 0


def test_reverting_a_param_restores_its_run_without_training(history_copy: Path) -> None:
    repo = history_copy
    # Back to the baseline's image size, which has been run before (HEAD~1).
    run(["git", "checkout", "HEAD~1", "--", "params.yaml"], repo)
    stdout = dvc(repo, "repro")
    assert "train" not in ran_stages(stdout), (
        f"train ran again instead of coming from the run-cache:\n{stdout}"
    )
    assert "Stage 'train' is cached" in stdout
    # smoke_check's published folder is a persist output, which DVC never restores from the
    # run-cache: it checks the restored candidate again and republishes it, in seconds.
    assert ran_stages(stdout) == {"smoke_check"}
    # Exactly the baseline's outputs and metrics, but for the blessing gate's verdict, which
    # names the version the candidate was held against: nothing was published at HEAD~1,
    # HEAD's model is now.
    changed = run(["git", "diff", "--name-only", "HEAD~1", "--", "dvc.lock", "metrics"], repo).stdout.split()
    assert changed == ["dvc.lock", "metrics/bless.json"]
    assert without_verdict(run(["git", "show", "HEAD~1:dvc.lock"], repo).stdout) == without_verdict(
        (repo / "dvc.lock").read_text()
    )
    then = json.loads(run(["git", "show", "HEAD~1:metrics/bless.json"], repo).stdout)
    now = json.loads((repo / "metrics/bless.json").read_text())
    assert (then["published_f2"], now["published"]) == (None, "models/PlanetModel/1")
    held_against = {"published", "published_f2", "required_f2"}
    assert {k: v for k, v in then.items() if k not in held_against} == {
        k: v for k, v in now.items() if k not in held_against
    }
    assert json.loads(dvc(repo, "status", "--json")) == {}


def without_verdict(lock_text: str) -> dict:
    """A dvc.lock's stages without the hash of metrics/bless.json."""
    stages = yaml.safe_load(lock_text)["stages"]
    smoke = stages["smoke_check"]
    smoke["outs"] = [out for out in smoke["outs"] if out["path"] != "metrics/bless.json"]
    return stages


def find_experiment(shown: list, name: str) -> dict:
    """The ``dvc exp show --json`` entry of experiment ``name``."""
    pending = list(shown)
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("name") == name and isinstance(node.get("data"), dict):
                return node
            pending += [node.get("experiments") or [], node.get("revs") or []]
        elif isinstance(node, list):
            pending += node
    raise AssertionError(f"experiment {name!r} not in `dvc exp show --json`")


def test_experiment_runs_and_shows_its_params_and_metrics(history_copy: Path) -> None:
    repo = history_copy
    dvc_yaml = (repo / "dvc.yaml").read_text()

    head = json.loads((repo / "metrics/eval.json").read_text())
    stdout = dvc(repo, "exp", "run", "--name", "three-epochs", "-S", "train.epochs=3")
    assert ran_stages(stdout) == {"train", "evaluate", "export", "smoke_check"}, "the experiment should train"
    assert (repo / "dvc.yaml").read_text() == dvc_yaml, "DVCLive (or DVC) rewrote dvc.yaml"

    data = find_experiment(json.loads(dvc(repo, "exp", "show", "--json")), "three-epochs")["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["epochs"] == 3
    evaluation = data["metrics"]["metrics/eval.json"]["data"]
    # The experiment's own evaluation: its gain is over the baseline of the same test chips
    # (the committed run's, which no training changes).
    assert evaluation["baseline"] == head["baseline"]
    assert evaluation["gain_over_baseline"]["f2"] == round(evaluation["f2"] - head["baseline"]["f2"], 4)
    assert data["metrics"]["metrics/train/metrics.json"]["data"]["step"] == 2
    # The workspace is the experiment's result; HEAD is untouched.
    workspace = json.loads((repo / "metrics/eval.json").read_text())
    assert {key: workspace[key] for key in evaluation} == evaluation  # exp show leaves out the matrix
    assert run(["git", "status", "--porcelain", "dvc.yaml"], repo).stdout == ""
