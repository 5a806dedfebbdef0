"""Reloading as TF Serving does: a new or replacing folder loads before the old version
goes, failed loads are retried, and an unloaded version's memory is freed.

Server tests run a real ``amazonia serve`` and change its model folder as ``cp -r``,
``dvc pull`` and DVC's delete-then-restore do, with a client asking all along; the
repository's knobs (grace, retries) are exercised in-process on a real exported model.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests

from amazonia.data.vocabulary import LABELS_GROUND
from amazonia.export.contract import ASSETS_EXTRA, SAVED_MODEL_PB, THRESHOLDS_ASSET
from amazonia.serving.model_config import VersionPolicy
from amazonia.serving.repository import (
    AVAILABLE,
    END,
    MAX_FINGERPRINT_ENTRIES,
    ModelRepository,
    folder_fingerprint,
)
from amazonia.serving.rest import RestError
from tests.conftest import MODEL, ROOT, SIZE, Exported, run_python, serve_models

POLL_SECONDS = 0.3
WAIT_S = 60.0  # for a load or a reload to happen; a bound on waiting, not a timing assertion
ZEROS = {"instances": [np.zeros((SIZE, SIZE, 3)).tolist()]}


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def version_dir(exported: Exported) -> Path:
    """The shared untrained 32 px export (tests/conftest.py), to copy into model folders."""
    return exported.base_path / "1"


def marked_copy(version_dir: Path, dest: Path, mark: float) -> Path:
    """A copy of the export whose thresholds.json holds ``mark``: which copy is served shows."""
    shutil.copytree(version_dir, dest)
    path = dest / ASSETS_EXTRA / THRESHOLDS_ASSET
    thresholds = json.loads(path.read_text())
    thresholds["ground"][LABELS_GROUND[0]] = mark
    path.write_text(json.dumps(thresholds))
    return dest


@dataclass
class Server:
    port: int
    base: Path
    model: str

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/v1/models/{self.model}{path}"

    def listed(self) -> dict[str, str]:
        statuses = requests.get(self.url(), timeout=30).json()["model_version_status"]
        return {s["version"]: s["state"] for s in statuses}

    def served_version(self) -> str | None:
        """The version answering requests that name none; None while none is served."""
        response = requests.get(self.url("/metadata"), timeout=30)
        return response.json()["model_spec"]["version"] if response.status_code == 200 else None

    def mark(self, version: int) -> float | None:
        """The ``marked_copy`` mark of the served ``version``; None while it is not served."""
        response = requests.get(self.url(f"/versions/{version}/assets/{THRESHOLDS_ASSET}"), timeout=30)
        return response.json()["ground"][LABELS_GROUND[0]] if response.status_code == 200 else None


# One model per HTTP test, each over its own folder, all served by one ``amazonia serve``
# (a model config file): what a test does to its folder, no other test's model sees.
HTTP_MODELS = ("written-in-two-steps", "deleted-and-rewritten", "moved")


@pytest.fixture(scope="module")
def servers(version_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """``amazonia serve`` over HTTP_MODELS, each a private folder holding version 1 (mark
    0.5), every version served (``all {}``, as with ``--model_base_path``)."""
    root = tmp_path_factory.mktemp("reload")
    configs = []
    for model in HTTP_MODELS:
        shutil.copytree(version_dir, root / model / "1")
        configs.append(
            f'config {{ name: "{model}" base_path: "{model}" model_platform: "tensorflow" '
            "model_version_policy { all {} } }"
        )
    config = root / "models.config"
    config.write_text("model_config_list {\n  " + "\n  ".join(configs) + "\n}\n")
    options = ("--model_config_file", str(config), "--poll-seconds", str(POLL_SECONDS))
    for _, port in serve_models(None, root / "serve.log", HTTP_MODELS[0], *options):
        yield {model: Server(port, root / model, model) for model in HTTP_MODELS}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S:g} s for {what}")
        time.sleep(0.1)


@dataclass
class Asker:
    """A client asking ``paths`` in turn (predict for ``:predict``, else GET) until stopped."""

    server: Server
    paths: tuple[str, ...]
    answers: int = 0
    refused: list[str] = field(default_factory=list)  # "<path>: HTTP <status> <body>"

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ask, daemon=True)

    def __enter__(self) -> Asker:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _ask(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                for path in self.paths:
                    if path.endswith(":predict"):
                        response = session.post(self.server.url(path), json=ZEROS, timeout=60)
                    else:
                        response = session.get(self.server.url(path), timeout=60)
                    self.answers += 1
                    if response.status_code != 200:
                        self.refused.append(f"{path}: HTTP {response.status_code} {response.text[:200]}")


def polls(n: int) -> None:
    """Let the server poll ``n`` times: what it would do with the folder meanwhile, it does."""
    time.sleep(n * POLL_SECONDS)


# --- over HTTP ------------------------------------------------------------------------------


def test_a_folder_written_in_two_steps_is_served_once_complete(
    servers: dict[str, Server], version_dir: Path
) -> None:
    server = servers["written-in-two-steps"]
    # As cp -r or dvc pull write it: saved_model.pb first, variables/ some time later.
    partial = server.base / "2"
    partial.mkdir()
    for name in (SAVED_MODEL_PB, ASSETS_EXTRA):
        source = version_dir / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, partial / name)
    wait_for(lambda: server.listed().get("2") == END, "failed load of the half-written version 2")
    failed = requests.get(server.url("/versions/2"), timeout=30).json()["model_version_status"][0]
    message = failed["status"]["error_message"]
    assert message.startswith("version 2: cannot load it: ") and "variables/variables" in message, message
    assert str(server.base) not in message
    assert server.served_version() == "1"

    shutil.copytree(version_dir / "variables", partial / "variables")

    wait_for(lambda: server.listed() == {"2": AVAILABLE, "1": AVAILABLE}, "version 2 loaded")
    assert server.served_version() == "2"
    assert requests.post(server.url("/versions/2:predict"), json=ZEROS, timeout=60).status_code == 200


def test_a_version_folder_deleted_and_rewritten_is_served_throughout(
    servers: dict[str, Server], version_dir: Path
) -> None:
    server = servers["deleted-and-rewritten"]
    # DVC deletes an output before restoring it; the copy back is not atomic either.
    replacement = marked_copy(version_dir, server.base.parent / "replacement", mark=0.25)
    with Asker(server, (":predict", "/versions/1:predict", "/metadata", "")) as asker:
        shutil.rmtree(server.base / "1")
        polls(5)
        answered_while_gone = asker.answers
        (server.base / "1").mkdir()
        shutil.copy2(replacement / SAVED_MODEL_PB, server.base / "1" / SAVED_MODEL_PB)
        polls(5)
        for part in ("variables", "assets", ASSETS_EXTRA):
            shutil.copytree(replacement / part, server.base / "1" / part)
        wait_for(lambda: server.mark(1) == 0.25, "the rewritten version 1 served")
    assert asker.refused == []
    assert answered_while_gone > 0
    assert server.listed() == {"1": AVAILABLE}


def test_a_new_version_is_loaded_before_the_old_one_is_unloaded(
    servers: dict[str, Server], version_dir: Path
) -> None:
    server = servers["moved"]
    # The old version's folder goes in the same poll as the new one's appears (a "move").
    shutil.copytree(version_dir, server.base / ".tmp-2")
    with Asker(server, (":predict", "/metadata")) as asker:
        shutil.rmtree(server.base / "1")
        (server.base / ".tmp-2").rename(server.base / "2")
        wait_for(lambda: server.served_version() == "2", "version 2 served")
    assert asker.refused == []
    assert asker.answers > 0


# --- in-process: the knobs ------------------------------------------------------------------


def refresh_until(repository: ModelRepository, condition: Callable[[], bool], what: str) -> None:
    """Poll as the server's thread does until ``condition()``."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S:g} s for {what}")
        time.sleep(repository.poll_seconds)
        repository.refresh()


def test_a_vanished_version_is_unloaded_after_the_grace_but_never_leaves_none(
    version_dir: Path, tmp_path: Path
) -> None:
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    repository = ModelRepository(base, MODEL, 0.05, missing_folder_grace_s=0)
    repository.refresh()
    assert set(repository.versions) == {1}
    latest_refused: list[str] = []
    stop = threading.Event()

    def ask_latest() -> None:
        while not stop.is_set():
            try:
                repository.get(MODEL, None)
            except RestError as err:
                latest_refused.append(err.message)
            time.sleep(0.001)

    asker = threading.Thread(target=ask_latest, daemon=True)
    asker.start()
    try:
        shutil.copytree(version_dir, base / "2")
        shutil.rmtree(base / "1")
        repository.refresh()  # 2 is new (left to settle) and 1 is gone: 1 serves on
        assert set(repository.versions) == {1}
        refresh_until(repository, lambda: set(repository.versions) == {2}, "version 2 alone")
    finally:
        stop.set()
        asker.join()
    assert latest_refused == []

    shutil.rmtree(base / "2")
    repository.refresh()  # nothing waits to load: a deleted last version is unloaded too
    assert repository.versions == {}


def test_a_vanished_version_is_served_on_during_the_grace(version_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    repository = ModelRepository(base, MODEL, 0.05, missing_folder_grace_s=3600)
    repository.refresh()
    shutil.rmtree(base / "1")
    for _ in range(3):
        repository.refresh()
    assert set(repository.versions) == {1}
    assert repository.status(MODEL, 1)[0]["state"] == AVAILABLE


def test_a_version_the_policy_drops_is_unloaded_only_once_a_version_it_keeps_serves(
    version_dir: Path, tmp_path: Path
) -> None:
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    repository = ModelRepository(base, MODEL, 0.05, policy=VersionPolicy(latest=1))
    repository.refresh()
    assert set(repository.versions) == {1}
    # Version 2, the one latest 1 keeps, without its variables yet: version 1 serves on.
    (base / "2").mkdir()
    for name in (SAVED_MODEL_PB, "assets", ASSETS_EXTRA):
        source = version_dir / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, base / "2" / name)
    refresh_until(repository, lambda: repository.states().get(2) == END, "the failed load of version 2")
    assert set(repository.versions) == {1}
    shutil.copytree(version_dir / "variables", base / "2" / "variables")
    refresh_until(repository, lambda: set(repository.versions) == {2}, "version 2 alone")
    # A policy changed while serving (a re-read model config file): load before unload again.
    repository.policy = VersionPolicy(specific=frozenset({1}))
    repository.refresh()
    assert set(repository.versions) == {2}
    refresh_until(repository, lambda: set(repository.versions) == {1}, "version 1 alone")


def test_failed_loads_are_retried_with_backoff_then_given_up(version_dir: Path, tmp_path: Path) -> None:
    # variables/ is a link to storage not there yet (DVC's symlink cache before a pull):
    # the folder does not change when its target appears, so only a retry finds it.
    storage = tmp_path / "storage"
    base = tmp_path / MODEL
    for version in (1, 2):
        (base / str(version)).mkdir(parents=True)
        for name in (SAVED_MODEL_PB, "assets", ASSETS_EXTRA):
            source = version_dir / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, base / str(version) / name)
        os.symlink(storage / str(version), base / str(version) / "variables")
    repository = ModelRepository(base, MODEL, 0.05, max_num_load_retries=3)

    def message(version: int) -> str:
        return repository.status(MODEL, version)[0]["status"]["error_message"]

    repository.refresh()
    assert repository.versions == {}
    assert message(2).endswith("; retrying in 0.05 s (attempt 1 of 4)"), message(2)
    shutil.copytree(version_dir / "variables", storage / "1")
    refresh_until(repository, lambda: 1 in repository.versions, "version 1 loaded by a retry")

    refresh_until(repository, lambda: "gave up" in message(2), "retries of version 2 spent")
    assert message(2).endswith("; gave up after 4 attempts: change the folder (or touch it) to retry")
    shutil.copytree(version_dir / "variables", storage / "2")
    for _ in range(5):
        time.sleep(repository.poll_seconds)
        repository.refresh()
    assert set(repository.versions) == {1}
    assert repository.status(MODEL, 2)[0]["state"] == END
    os.utime(base / "2")  # touched: tried again
    refresh_until(repository, lambda: 2 in repository.versions, "version 2 loaded once touched")


def test_a_poll_looks_at_a_bounded_number_of_entries_whatever_the_folder_holds(
    version_dir: Path, tmp_path: Path
) -> None:
    # Walking every entry kept an idle server at 42 % of a core for a version of 100,000 files.
    folder = shutil.copytree(version_dir, tmp_path / "1")
    for i in range(5_000):
        (folder / "assets" / f"{i}.txt").touch()
    fingerprint = folder_fingerprint(folder)
    assert len(fingerprint) == MAX_FINGERPRINT_ENTRIES
    names = {name for name, *_ in fingerprint}
    assert {".", SAVED_MODEL_PB, "variables", "variables/variables.index"} <= names
    assert folder_fingerprint(folder) == fingerprint  # the same folder, the same fingerprint
    (folder / SAVED_MODEL_PB).write_bytes((folder / SAVED_MODEL_PB).read_bytes() + b"x")
    assert folder_fingerprint(folder) != fingerprint  # a file the loader reads changed


# --- memory ---------------------------------------------------------------------------------

# A loaded version is ~4,400 objects the collector tracks, in reference cycles: an unloaded
# one is freed only by a collection, and never if gc.freeze took it. Counted after each
# reload, they show either leak exactly (the freeze count, or the tracked objects, grow by a
# version's worth per reload), in a few reloads. The server's RSS across 20 reloads, as a
# number: bench/serving.py.
RELOADS = 3
VERSION_OBJECTS = 4_000
RELOAD_SCRIPT = """
import gc, json, shutil, sys
from pathlib import Path
from amazonia.serving.repository import ModelRepository

base, reloads = Path(sys.argv[1]), int(sys.argv[2])
repository = ModelRepository(base, "PlanetModel", 0.01, missing_folder_grace_s=0)
repository.refresh()
counts = []
for version in range(2, reloads + 2):  # one version at a time: the next in, the last out
    shutil.copytree(base / str(version - 1), base / f".tmp-{version}")
    (base / f".tmp-{version}").rename(base / str(version))
    shutil.rmtree(base / str(version - 1))
    for _ in range(2):  # the new folder is loaded once unchanged for one poll
        repository.refresh()
    assert set(repository.versions) == {version}, sorted(repository.versions)
    counts.append({"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())})
print(json.dumps(counts))
"""


def test_an_unloaded_version_is_freed_by_the_poll_that_unloads_it(version_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    # A fresh interpreter: the first poll of the process freezes the heap before any load.
    result = run_python(RELOAD_SCRIPT, base, RELOADS, cwd=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert len({count["frozen"] for count in counts}) == 1, f"gc.freeze took a loaded version: {counts}"
    growth = counts[-1]["tracked"] - counts[0]["tracked"]
    assert growth < VERSION_OBJECTS / 2, f"unloaded versions left in memory: {counts}"
