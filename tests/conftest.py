"""Shared fixtures: the reference data, and throw-away copies of this project as real
git + DVC repositories in which tests run real ``dvc repro``."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from amazonia.data.vocabulary import LABELS_GROUND

# Shared with the benchmarks, which make the same throw-away copies of the project.
from bench.common import copy_project, file_digests, set_params, tool_env  # noqa: F401 (tests import them from here)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
BIN = Path(sys.executable).parent

# Small enough for seconds per stage, large enough for every split to get chips.
TINY_PARAMS = {
    "data": {"n_images": 60, "seed": 7},
    "serialize": {"shard_mb": 0.05},
    "runtime": {"workers": 1},  # in-process; several: tests/test_pipeline.py's same-bytes test
    "train": {"image_size": 32, "epochs": 2, "batch_size": 16},
    # Two epochs on 48 chips do not beat the trivial baseline on 5 test chips (F2 0.67 against
    # 0.73), and the tests' retrains (another size, another threshold strategy) score
    # 0.49-0.81: bars that all of them clear, and that a model predicting nothing (F2 0)
    # misses by far, both of them.
    "export": {"bless": {"min_gain_over_baseline": -0.4, "max_drop_from_published": 0.3}},
}


def run(
    args: list[str], cwd: Path, check: bool = True, env_extra: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Run a command, returning its output; on an unexpected failure show it all."""
    env = tool_env(**(env_extra or {}))
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def run_python(code: str, *args: object, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this virtualenv (``sys.argv[1:]`` = ``args``),
    with extra environment ``env`` (e.g. ``PYTHONHASHSEED``); fails showing its output."""
    command = [sys.executable, "-c", code, *map(str, args)]
    result = subprocess.run(command, cwd=cwd, env=tool_env(**env), capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"python -c ... exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def csv_rows(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows as dicts keyed by its header, every field as the text written."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def ran_stages(output: str) -> set[str]:
    """The stages DVC reports it ran, from ``dvc repro``'s own output."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


REFERENCE_FILES = ("KagglePlanetMCML.csv", "train_v2_head.csv")

# Fixtures that run the pipeline, train or export a model (and what is built on them:
# pipeline_copy, history_copy...), or serve one (a test module's own ``server`` too): a test
# that asks for one, even through a fixture of its own, is slow, whether or not it says so.
# ``make test-fast`` leaves the slow ones out.
SLOW_FIXTURES = {"tiny_pipeline", "team_history", "exported", "server"}


# ``make test`` hands whole files to its pytest-xdist workers in collection order
# (``--dist loadfile --no-loadscope-reorder``): the longest first, so that no worker ends the
# run alone on one of them; but right after the first (which builds the tiny pipeline), files
# that need no pipeline, so that the other workers have work while it is built. Files that
# mostly wait on a server's timeouts go among the pipelines, whose training keeps both cores
# busy, not last, where two of them would leave the cores idle. Measured on 2 cores; the
# files not named (short, and busy) follow in name order.
LONGEST_FIRST = (
    "test_backbones.py",
    "test_export.py",
    "test_ingest_hardening.py",
    "test_rest_hostile.py",
    "test_serving.py",
    "test_reload.py",
    "test_resume.py",
    "test_team.py",
    "test_publish.py",
    "test_serving_batching.py",
    "test_pipeline.py",
    "test_bless.py",
    "test_serving_limits.py",
    "test_workflow.py",
    "test_model_pipeline.py",
    "test_client.py",
    "test_reruns.py",
    "test_distribute.py",
    "test_model_config.py",
    "test_artifacts.py",
    "test_full_disk_and_leftovers.py",
    "test_report.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order stays


@pytest.fixture(scope="session")
def reference() -> Path:
    """The article's rows, kept outside the repository in ``../shared/reference/``.

    A clone with nothing beside it skips the tests that need them; a folder that is
    there but incomplete is an error, not a reason to skip."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data folder {REFERENCE} not found (../shared/reference beside the repo)")
    missing = [name for name in REFERENCE_FILES if not (REFERENCE / name).is_file()]
    if missing:
        pytest.fail(f"{REFERENCE} lacks {', '.join(missing)}")
    return REFERENCE


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh git + DVC copy of the project with tiny params, nothing run yet."""
    repo = copy_project(tmp_path / "repo")
    set_params(repo, TINY_PARAMS)
    run(["git", "commit", "-qam", "tiny params"], repo)
    return repo


def built_once(
    config: pytest.Config, tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """A repository ``build(repo)`` makes once per test run, whichever pytest-xdist worker asks
    first (the others wait for it), copied with what the build wrote beside it into this
    worker's own temporary folder.

    The copy keeps two workers' DVC commands out of each other's repository lock; the build
    runs once for all of them (a tiny pipeline costs a minute of CPU)."""
    base = tmp_path_factory.getbasetemp()
    # An xdist worker's basetemp is a folder inside the run's own, which all workers share.
    is_worker = hasattr(config, "workerinput")
    shared = (base.parent if is_worker else base) / f"built-once-{name}"
    shared.mkdir(exist_ok=True)
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "built").is_file():
            if (shared / "work").exists():  # a build that failed in another worker
                shutil.rmtree(shared / "work")
            (shared / "work").mkdir()
            build(shared / "work" / "repo")
            (shared / "built").touch()
    work = tmp_path_factory.mktemp(name)
    shutil.copytree(shared / "work", work, symlinks=True, dirs_exist_ok=True)
    return work / "repo"


TINY_HASH_SEED = "1"  # the tiny run's PYTHONHASHSEED: the same-bytes test reruns with another


def build_tiny_pipeline(repo: Path) -> None:
    copy_project(repo)
    set_params(repo, TINY_PARAMS)
    run(["git", "commit", "-qam", "tiny params"], repo)
    run([str(BIN / "dvc"), "repro"], repo, env_extra={"PYTHONHASHSEED": TINY_HASH_SEED})


@pytest.fixture(scope="session")
def tiny_pipeline(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run of the whole pipeline, shared by read-only tests."""
    return built_once(pytestconfig, tmp_path_factory, "pipeline", build_tiny_pipeline)


@pytest.fixture
def pipeline_copy(tiny_pipeline: Path, tmp_path: Path) -> Path:
    """A private copy of the finished tiny run (git, DVC cache and outputs), to change."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_pipeline, repo, symlinks=True)
    return repo


# --- Team workflow: remotes, run-cache, experiments, PR reports -------------------------

S3_BUCKET = "amazonia-test"
S3_ACCESS_KEY_ID = "amazonia-test-key-id"
# Random per session, so finding it in a repository can only mean it leaked there.
S3_SECRET = f"amazonia-test-{os.urandom(8).hex()}"


def make(target: str, repo: Path, **variables: str) -> subprocess.CompletedProcess:
    """``make TARGET`` in a throw-away repo, with this checkout's virtualenv.

    ``-o .venv/.installed`` keeps make from building a virtualenv in ``repo`` (its
    ``install`` prerequisite); ``BIN`` points the Makefile's tools at this one."""
    overrides = [f"{name}={value}" for name, value in {"BIN": str(BIN), **variables}.items()]
    return run(["make", "--no-print-directory", "-o", ".venv/.installed", target, *overrides], repo)


def commit_all(repo: Path, message: str) -> None:
    """Commit everything git sees (dvc.lock, metrics, params); outputs are DVC's, git-ignored."""
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)
    left = run(["git", "status", "--porcelain"], repo).stdout
    assert not left, f"{repo}: files neither committed nor ignored:\n{left}"


HISTORY_IMAGE_SIZE = 24  # team_history's HEAD: the tiny run's 32 px, changed
HEAD_RUN = "head-run.txt"


@pytest.fixture(scope="session")
def team_history(
    tiny_pipeline: Path, pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Two committed tiny runs whose train params differ (read-only; copy it to change it).

    HEAD~1: the tiny run, with dvc.lock and metrics committed (the team's baseline);
    HEAD: ``train.image_size`` 32 -> 24, rerun (its ``dvc repro`` output: ``HEAD_RUN`` beside
    the repository). The DVC cache and the run-cache hold both runs."""

    def build(repo: Path) -> None:
        shutil.copytree(tiny_pipeline, repo, symlinks=True)
        commit_all(repo, "baseline: tiny run")
        set_params(repo, {"train": {"image_size": HISTORY_IMAGE_SIZE}})
        (repo.parent / HEAD_RUN).write_text(run([str(BIN / "dvc"), "repro"], repo).stdout)
        commit_all(repo, f"train: image size {HISTORY_IMAGE_SIZE}")

    return built_once(pytestconfig, tmp_path_factory, "history", build)


@pytest.fixture
def history_copy(team_history: Path, tmp_path: Path) -> Path:
    """A private copy of ``team_history`` at ``tmp_path/team/a``: clones go beside it."""
    repo = tmp_path / "team" / "a"
    shutil.copytree(team_history, repo, symlinks=True)
    return repo


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_START_TIMEOUT_S = 120


def serve_models(
    base_path: Path | None, log: Path, model: str, *options: str, serve_params: dict | None = None
) -> Iterator[tuple[subprocess.Popen, int]]:
    """Run ``amazonia serve`` over ``base_path`` until ``model`` answers; yield (process, port);
    always stop it. With ``base_path`` None, ``options`` name the models
    (``--model_config_file``).

    ``options`` are more ``amazonia serve`` flags (``--poll-seconds``, ...); ``serve_params``,
    the ``serve:`` section of a params.yaml written beside ``log``, where the server then
    runs (else it runs here, with the project's params.yaml). Meant for ``yield from``
    inside a fixture."""
    import requests

    port = free_port()
    cwd = None
    if serve_params is not None:
        cwd = log.parent
        (cwd / "params.yaml").write_text(yaml.safe_dump({"serve": serve_params}))
    folder = [] if base_path is None else ["--model-name", model, "--model-base-path", str(base_path)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "amazonia"), "serve", "--port", str(port), "--host", "127.0.0.1", *folder, *options,
            ],
            stdout=out, stderr=subprocess.STDOUT, env=tool_env(), cwd=cwd,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"amazonia serve not ready (exit code {proc.poll()}):\n{log.read_text()}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/v1/models/{model}", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        yield proc, port
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3_endpoint() -> str:
    """A real S3-compatible endpoint (moto_server) on 127.0.0.1 with bucket ``S3_BUCKET``."""
    import urllib.error
    import urllib.request

    import boto3

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"moto_server on port {port} exited {server.returncode}:\n{server.stdout.read()}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answers, whatever it thinks of "/"
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer on {url} within 60 s")
                time.sleep(0.2)
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=S3_ACCESS_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=S3_BUCKET)
        yield url
    finally:
        stop_process(server, grace_s=10)


# --- Killing a run half-way, and what a training run left -------------------------------


def kill_repro_when(
    repo: Path, targets: list[str], ready: Callable[[], bool], waiting_for: str, timeout_s: float = 180
) -> None:
    """Start ``dvc repro TARGETS`` in ``repo`` and kill -9 it, DVC and its stage alike,
    as soon as ``ready()``; fail if it ends first or ``waiting_for`` never happens."""
    # A killed process leaves its temporary files (TF's autograph writes one per converted
    # function and removes them at exit): they go beside the repository, not into /tmp.
    scratch = Path(tempfile.mkdtemp(prefix="killed-tmp-", dir=repo.parent))
    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro", *targets],
        cwd=repo,
        env=tool_env(TMPDIR=str(scratch)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            assert proc.poll() is None, f"dvc repro {' '.join(targets)} finished before {waiting_for}"
            assert time.monotonic() < deadline, f"no {waiting_for} within {timeout_s} s"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def kill_train_after(repo: Path, min_epoch: int, timeout_s: float = 180) -> int:
    """Start ``dvc repro train`` in ``repo``, kill -9 it (DVC and the stage) once
    ``min_epoch`` epochs are checkpointed; the epochs its checkpoint holds."""
    state = repo / "models/checkpoints/state.json"

    def checkpointed() -> bool:
        # state.json is replaced atomically: it reads whole or not at all.
        current = json.loads(state.read_text()) if state.is_file() else {}
        return current.get("epoch", 0) >= min_epoch and not current["complete"]

    kill_repro_when(repo, ["train"], checkpointed, f"a checkpoint of epoch {min_epoch}", timeout_s)
    return json.loads(state.read_text())["epoch"]


def first_epoch(dvc_output: str) -> int:
    """The first epoch Keras reported training in a ``dvc repro`` output."""
    return int(re.search(r"^Epoch (\d+)/\d+", dvc_output, re.M).group(1))


def saved_arrays(keras_file: Path) -> dict[str, np.ndarray]:
    """Every array of a ``.keras`` file, by its path in ``model.weights.h5``: the layers'
    weights and the optimizer's state (Adam's step count and moments)."""
    import h5py

    arrays: dict[str, np.ndarray] = {}

    def collect(name: str, node: h5py.Dataset | h5py.Group) -> None:
        if isinstance(node, h5py.Dataset):
            arrays[name] = node[()]

    with zipfile.ZipFile(keras_file) as archive:
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
            weights.visititems(collect)
    return arrays


def folder_texts(folder: Path) -> dict[str, str]:
    """The text of every file under ``folder`` (as DVCLive's: a summary and curves), by path."""
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- Pretrained weights files, written here in Keras Applications' format ----------------


def write_keras_weights(architecture: str, path: Path, seed: int) -> list[np.ndarray]:
    """Write ``path`` as Keras Applications writes a notop weights file (legacy HDF5 weights
    of the ``include_top=False`` backbone), with weights drawn from ``seed``; return them.

    Nothing can be downloaded here: this stands in for the real file, which
    ``keras.applications.<X>(include_top=False, weights=path)`` loads the same way.
    """
    import h5py
    from keras.src.legacy.saving import legacy_h5_format  # the writer of Keras's .h5 weights

    from amazonia.model.architectures import BACKBONES

    backbone = BACKBONES[architecture](include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(seed)
    # Far from any initializer's draw, so a backbone that did not load them shows.
    weights = [(w + rng.normal(0, 0.05, w.shape)).astype(w.dtype) for w in backbone.get_weights()]
    backbone.set_weights(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, backbone)
    return weights


def read_keras_weights(path: Path) -> list[np.ndarray]:
    """The arrays of a legacy HDF5 weights file, read with h5py, in the file's layer order."""
    import h5py

    def text(value: bytes | str) -> str:
        return value.decode() if isinstance(value, bytes) else value

    with h5py.File(path, "r") as handle:
        return [
            np.asarray(handle[text(layer)][text(name)])
            for layer in handle.attrs["layer_names"]
            for name in handle[text(layer)].attrs["weight_names"]
        ]


# --- A small filesystem, for a real full disk ---------------------------------------------

# ``$1`` KiB of tmpfs on the folder ``$2``, then the command; what is left on it is listed.
SMALL_FILESYSTEM = (
    'folder="$2"; mount -t tmpfs -o size="$1"k tmpfs "$folder" || exit 99; shift 2; '
    '"$@"; rc=$?; ls -A "$folder"; exit $rc'
)


def on_small_filesystem(
    folder: Path, size_kib: int, command: list[str], cwd: Path
) -> subprocess.CompletedProcess:
    """Run ``command`` in ``cwd`` with ``folder`` on a fresh tmpfs of ``size_kib``, in a mount
    namespace of its own (``unshare``: no root needed where unprivileged user namespaces are
    allowed; skips where they are not). The tmpfs is gone when it ends; stdout ends with
    what was left on it."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare (util-linux) to mount a small tmpfs in a private mount namespace")
    args = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", SMALL_FILESYSTEM, "sh"]
    result = subprocess.run(
        [*args, str(size_kib), str(folder), *command], cwd=cwd, env=tool_env(), capture_output=True, text=True
    )
    if result.returncode == 99 or result.stderr.startswith("unshare: "):
        pytest.skip(f"cannot mount a small tmpfs in a private mount namespace: {result.stderr.strip()}")
    return result


# --- Serving: one exported model and one server for every test that only asks ------------

MODEL = "PlanetModel"
SIZE = 32  # px: the served model is untrained; its cost does not matter, only its contract
# A different threshold per label, so that a label/threshold mix-up anywhere (export, assets,
# client) changes which ground tags come out.
THRESHOLDS = {"ground": {label: round(0.05 + 0.07 * i, 2) for i, label in enumerate(LABELS_GROUND)}}
# serve.* of the shared server: limits small enough to reach in a test in milliseconds.
SERVER_PARAMS = {
    "poll_seconds": 0.3,
    "max_body_mb": 0.5,  # the 32 px float payloads are ~60 KB
    "read_timeout_seconds": 1,  # tests of slow clients wait this long
    "keep_alive_seconds": 1,
    "write_timeout_seconds": 1,
    "max_unsent_kb": 64,
    "max_instances": 200,
    "max_request_pixels": 2 * 4096 * 4096,
}


@dataclass
class Exported:
    root: Path
    model: Any  # keras.Model: keras is imported by the fixture, not by every test module
    chips: list[Path]

    @property
    def base_path(self) -> Path:
        return self.root / "models" / MODEL


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def model_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/models/{MODEL}"

    def get(self, path: str = "", **kwargs: Any) -> Any:
        import requests

        return requests.get(self.model_url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        import requests

        return requests.post(self.model_url + path, timeout=60, **kwargs)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """An untrained 32 px model exported as version 1 by the project's code, and six
    256x256 synthetic chips (read-only: copy the model folder to change it)."""
    import keras

    from amazonia.data.kaggle import IMAGE_DIR
    from amazonia.data.labels import label_map
    from amazonia.data.synthetic.generate import generate_dataset
    from amazonia.export.saved_model import export_saved_model
    from amazonia.model.network import build_model

    root = tmp_path_factory.mktemp("serving")
    keras.utils.set_random_seed(0)
    model = build_model(SIZE)
    export_saved_model(model, root / "models" / MODEL / "1", label_map(), THRESHOLDS)
    generate_dataset(root / "chips", 6, seed=1, workers=1)
    return Exported(root, model, sorted((root / "chips" / IMAGE_DIR).glob("*.jpg")))


@pytest.fixture(scope="session")
def server(exported: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``amazonia serve`` over ``exported`` with SERVER_PARAMS, shared by every test that
    does not change its folder or stop it."""
    yield from serving(exported.base_path, tmp_path_factory.mktemp("server"), SERVER_PARAMS)


def serving(base_path: Path, folder: Path, serve_params: dict, *options: str) -> Iterator[Server]:
    """A Server over ``base_path`` with ``serve_params`` (params.yaml and log in ``folder``)
    and more ``amazonia serve`` flags."""
    log = folder / "serve.log"
    for proc, port in serve_models(base_path, log, MODEL, *options, serve_params=serve_params):
        yield Server(proc, port, log)
