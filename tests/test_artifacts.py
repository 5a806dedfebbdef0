"""The published model as a named DVC artifact: its entry in dvc.yaml, GTO tags that
version and promote it, and ``dvc artifacts get`` bringing exactly the published
SavedModel into a directory outside the project, from the default local folder remote
and from an S3-compatible one.

Every test starts from ``team_history`` (HEAD~1 and HEAD publish different models under
the same version folder), so none runs the pipeline."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from amazonia.common.params import load_params
from amazonia.common.paths import MODEL_KERAS, MODELS_DIR
from amazonia.export.contract import published_dir
from tests.conftest import (
    BIN,
    S3_ACCESS_KEY_ID,
    S3_BUCKET,
    S3_SECRET,
    file_digests,
    run,
    run_python,
)

DVC = str(BIN / "dvc")
GTO = str(BIN / "gto")
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET}

pytestmark = pytest.mark.slow


def artifact_name(repo: Path) -> str:
    """The artifact's name: TF Serving's model name, ``export.model_name``."""
    return load_params(repo / "params.yaml").export.model_name


def published_path(repo: Path) -> Path:
    """The version folder smoke_check publishes, relative to ``repo``."""
    export = load_params(repo / "params.yaml").export
    return published_dir(MODELS_DIR, export.model_name, export.version)


# DVC's API in a process of its own: a DVC Repo opened in the test process closes the file
# that pytest captures output into once TensorFlow is loaded there too.
READ_ARTIFACTS = """
import json
from dvc.repo import Repo

with Repo(".") as repo:
    artifacts = repo.artifacts.read()["dvc.yaml"]
    (smoke_check,) = repo.stage.collect("smoke_check")
    print(json.dumps({
        "artifacts": {name: {"path": a.path, "type": a.type, "desc": a.desc, "labels": a.labels}
                      for name, a in artifacts.items()},
        "persisted": [str(out.def_path) for out in smoke_check.outs if out.persist],
    }))
"""


def test_the_published_model_is_declared_as_a_model_artifact(tiny_pipeline: Path) -> None:
    repo = tiny_pipeline
    declared = json.loads(run_python(READ_ARTIFACTS, cwd=repo).stdout)
    artifacts, persisted = declared["artifacts"], declared["persisted"]
    assert list(artifacts) == [artifact_name(repo)]
    artifact = artifacts[artifact_name(repo)]
    # Exactly smoke_check's published folder: never the unchecked candidate.
    assert persisted == [published_path(repo).as_posix()] == [artifact["path"]]
    assert artifact["type"] == "model"
    assert artifact["desc"]
    architecture = json.loads(zipfile.ZipFile(repo / MODEL_KERAS).read("config.json"))["config"]["name"]
    assert {"planet", "multi-label", "tf-serving", architecture} <= set(artifact["labels"])


def dvc(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``dvc ARGS`` in ``repo``; its stdout."""
    return run([DVC, *args], repo, env_extra=env).stdout


def gto(repo: Path, *args: str) -> None:
    """Run ``gto ARGS`` in ``repo``, pushing the tag it creates to ``origin``."""
    run([GTO, *args, "--push"], repo)


def git_server(origin: Path) -> Path:
    """A bare repository beside ``origin``, standing for the team's git host, as its ``origin``."""
    server = origin.parent / "server.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(server)], origin.parent)
    run(["git", "remote", "add", "origin", str(server)], origin)
    run(["git", "push", "-q", "origin", "main"], origin)
    return server


def push_published_model(repo: Path, *push_args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """Push the published model of the commit checked out in ``repo``, as its author did
    after the run.

    Returns:
        The published folder's file digests."""
    dvc(repo, "push", *push_args, "smoke_check", env=env)
    return file_digests(repo / published_path(repo))


def artifacts_get(
    repo_url: Path, name: str, out: Path, *args: str, env: dict[str, str] | None = None
) -> None:
    """``dvc artifacts get REPO_URL NAME -o OUT ARGS``, run in ``out``'s folder, outside any project."""
    out.parent.mkdir(parents=True, exist_ok=True)
    dvc(out.parent, "artifacts", "get", str(repo_url), name, "-o", str(out), *args, env=env)


def wait_for_the_next_second() -> None:
    """Git stamps a tag to the second and DVC fetches a stage's newest tag: a promotion in
    the same second as the assignment it replaces would tie with it."""
    time.sleep(1 - time.time() % 1)


def test_gto_stages_choose_the_model_dvc_artifacts_get_brings_from_the_local_remote(
    history_copy: Path, tmp_path: Path
) -> None:
    origin = history_copy  # tmp_path/team/a; the default remote: tmp_path/team/amazonia-dvc-storage
    name = artifact_name(origin)
    server = git_server(origin)
    retrained = push_published_model(origin)
    run(["git", "checkout", "-q", "HEAD~1"], origin)
    dvc(origin, "checkout", "smoke_check")
    baseline = push_published_model(origin)
    run(["git", "checkout", "-q", "main"], origin)
    assert baseline != retrained, "the two runs should publish different models"

    gto(origin, "register", name, "HEAD~1", "--version", "v1.0.0")
    gto(origin, "assign", name, "--version", "v1.0.0", "--stage", "stable")
    gto(origin, "register", name, "HEAD", "--bump-minor")
    gto(origin, "assign", name, "--version", "v1.1.0", "--stage", "canary")

    # From the git host: DVC clones it into a temporary folder, against which the default
    # remote's relative url would resolve, so the consumer names the folder.
    storage = ("--remote-config", f"url={origin.parent / 'amazonia-dvc-storage'}")

    # A serving host fills TF Serving's model base path: an existing folder as -o receives
    # the version folder under its own number; -o base/N puts it under another.
    base = tmp_path / "serving" / name
    base.mkdir(parents=True)
    artifacts_get(server, name, base, "--stage", "stable", *storage)
    assert file_digests(base / published_path(origin).name) == baseline
    artifacts_get(server, name, base / "2", "--stage", "canary", *storage)
    assert file_digests(base / "2") == retrained
    artifacts_get(server, name, tmp_path / "by-version", "--rev", "v1.0.0", *storage)
    assert file_digests(tmp_path / "by-version") == baseline

    # From a teammate's clone on the same machine, the default remote resolves as committed.
    # The fresh clone has no DVC cache: what it hands out comes from the remote.
    teammate = origin.parent / "b"
    run(["git", "clone", "-q", str(server), str(teammate)], origin.parent)
    artifacts_get(teammate, name, tmp_path / "highest")
    assert file_digests(tmp_path / "highest") == retrained

    # Promote the canary, then roll back by assigning the old version again (GTO wants
    # --force for a version the stage held before).
    wait_for_the_next_second()
    gto(origin, "assign", name, "--version", "v1.1.0", "--stage", "stable")
    artifacts_get(server, name, tmp_path / "promoted", "--stage", "stable", *storage)
    assert file_digests(tmp_path / "promoted") == retrained
    wait_for_the_next_second()
    gto(origin, "assign", name, "--version", "v1.0.0", "--stage", "stable", "--force")
    artifacts_get(server, name, tmp_path / "rolled-back", "--stage", "stable", *storage)
    assert file_digests(tmp_path / "rolled-back") == baseline

    # What a deploy script reads to write TF Serving's version labels: the stage's commit
    # and the artifact's path there, whose last part is the version number.
    show_stable = (
        "import json, sys, dvc.api\n"
        "print(json.dumps(dvc.api.artifacts_show(sys.argv[1], stage='stable', repo=sys.argv[2])))"
    )
    # DVC's API leaves its temporary clone in TMPDIR (the dvc command removes it): here, tmp_path.
    shown = run_python(show_stable, name, server, cwd=tmp_path, TMPDIR=str(tmp_path))
    baseline_commit = run(["git", "rev-parse", "HEAD~1"], origin).stdout.strip()
    assert json.loads(shown.stdout) == {"rev": baseline_commit, "path": published_path(origin).as_posix()}


def test_dvc_artifacts_get_brings_the_stable_model_from_an_s3_compatible_remote(
    history_copy: Path, s3_endpoint: str, tmp_path: Path
) -> None:
    origin = history_copy
    name = artifact_name(origin)
    run([DVC, "remote", "add", "s3remote", f"s3://{S3_BUCKET}/amazonia"], origin)
    run([DVC, "remote", "modify", "s3remote", "endpointurl", s3_endpoint], origin)
    run(["git", "commit", "-qam", "dvc: S3-compatible remote"], origin)
    server = git_server(origin)
    published = push_published_model(origin, "--remote", "s3remote", env=S3_CREDENTIALS)
    gto(origin, "register", name, "HEAD", "--version", "v1.0.0")
    gto(origin, "assign", name, "--version", "v1.0.0", "--stage", "stable")

    # From the git host with nothing but the credentials, in the environment as in CI.
    out = tmp_path / "serving" / name / "1"
    artifacts_get(server, name, out, "--stage", "stable", "--remote", "s3remote", env=S3_CREDENTIALS)
    assert file_digests(out) == published
    # Nothing else holds it: the default folder remote was never pushed to, the git host has no cache.
    assert not (origin.parent / "amazonia-dvc-storage").exists()
