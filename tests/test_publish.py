"""Publishing only what passed: the smoke check swaps a checked candidate into the
version folder that servers poll, atomically, and a failed check publishes nothing.

The first tests exercise :func:`amazonia.export.publish.publish` on plain folders;
the last ones run ``dvc repro`` on a copy of the tiny pipeline while a real
``amazonia serve`` on 127.0.0.1 serves its published model and a thread keeps asking it.
"""

from __future__ import annotations

import base64
import errno
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from amazonia.export import publish as publish_module
from amazonia.export.contract import (
    SIGNATURE_BYTES,
    SIGNATURE_FLOAT,
    ExportError,
    candidate_dir,
    published_dir,
)
from amazonia.export.publish import PublishError, exchange, publish
from tests.conftest import BIN, TINY_PARAMS, ran_stages, run, serve_models, set_params, tool_env

DVC = str(BIN / "dvc")
MODEL = "PlanetModel"
SIZE = TINY_PARAMS["train"]["image_size"]
POLL_SECONDS = 0.3  # the server's: how soon it would pick up a wrongly published version
ROUND_PAUSE_S = 0.05
SETTLE_S = 1.0  # asking on after the repro (and after the swap, where one is awaited): 3 polls
SWAP_TIMEOUT_S = 60.0
SWAPPED_IN = "version 1: now served from its new folder"  # the server's log line (--verbose)


# --- publish() on plain folders ---------------------------------------------------------------


def make_candidate(folder: Path, tag: str) -> Path:
    """A folder shaped like a SavedModel, its bytes marked with ``tag``."""
    (folder / "variables").mkdir(parents=True)
    (folder / "assets.extra").mkdir()
    (folder / "saved_model.pb").write_text(f"graph {tag}")
    (folder / "variables" / "variables.index").write_text(f"index {tag}")
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(4096))
    (folder / "assets.extra" / "thresholds.json").write_text(f'{{"tag": "{tag}"}}')
    return folder


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_first_publication_appears_whole_with_nothing_beside_it(tmp_path: Path) -> None:
    candidate = make_candidate(tmp_path / "candidates" / MODEL / "1", "new")
    published = tmp_path / "models" / MODEL / "1"

    publish(candidate, published)

    assert files(published) == files(candidate)
    assert [p.name for p in published.parent.iterdir()] == ["1"]


@pytest.mark.slow
def test_a_replaced_version_is_never_missing(tmp_path: Path) -> None:
    """Swapped by renameat2(RENAME_EXCHANGE): a watcher that looks as fast as it can
    never finds the version folder without its saved_model.pb."""
    published = tmp_path / "models" / MODEL / "1"
    publish(make_candidate(tmp_path / "old", "old"), published)
    candidates = [make_candidate(tmp_path / f"c{i}", str(i)) for i in range(2)]
    exchanged: list[bool] = []
    missing, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not (published / "saved_model.pb").is_file():
                missing.append(time.monotonic())

    def recording_exchange(a: Path | str, b: Path | str) -> bool:
        exchanged.append(exchange(a, b))
        return exchanged[-1]

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(publish_module, "exchange", recording_exchange)
            for i in range(100):
                publish(candidates[i % 2], published)
    finally:
        stop.set()
        watcher.join()

    if sys.platform.startswith("linux"):
        assert exchanged == [True] * 100
    if all(exchanged):
        assert missing == []
    assert files(published) == files(candidates[1])
    assert [p.name for p in published.parent.iterdir()] == ["1"]


def test_without_an_exchange_it_renames_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    published = tmp_path / "models" / MODEL / "1"
    publish(make_candidate(tmp_path / "old", "old"), published)
    monkeypatch.setattr(publish_module, "exchange", lambda a, b: False)
    candidate = make_candidate(tmp_path / "new", "new")

    publish(candidate, published)

    assert files(published) == files(candidate)
    assert [p.name for p in published.parent.iterdir()] == ["1"]


def test_a_failed_copy_leaves_the_version_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    published = tmp_path / "models" / MODEL / "1"
    publish(make_candidate(tmp_path / "old", "old"), published)
    before = files(published)

    def disk_full(folder: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(publish_module, "_fsync_tree", disk_full)
    with pytest.raises(
        PublishError, match=r"cannot publish .*new to .*/1: .*No space left on device.*unchanged"
    ):
        publish(make_candidate(tmp_path / "new", "new"), published)

    assert files(published) == before
    assert [p.name for p in published.parent.iterdir()] == ["1"]


def test_leftovers_of_a_killed_publication_are_removed_and_no_others(tmp_path: Path) -> None:
    base = tmp_path / "models" / MODEL
    for name in (".tmp-1.abc123", ".tmp-10.abc123", "2"):
        (base / name).mkdir(parents=True)

    publish(make_candidate(tmp_path / "c", "c"), base / "1")

    assert sorted(p.name for p in base.iterdir()) == [".tmp-10.abc123", "1", "2"]


def test_a_folder_without_saved_model_pb_is_not_published(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PublishError, match=r"empty: no saved_model.pb to publish; run 'dvc repro export'"):
        publish(tmp_path / "empty", tmp_path / "models" / MODEL / "1")
    assert not (tmp_path / "models" / MODEL / "1").exists()


@pytest.mark.parametrize("name", ["candidates", "..", "."])
def test_model_names_that_would_mix_checked_and_unchecked_exports_are_refused(name: str) -> None:
    for where in (published_dir, candidate_dir):
        with pytest.raises(ExportError, match=rf"export.model_name '{re.escape(name)}' cannot name"):
            where("models", name, 1)


def test_publishing_loads_no_tensorflow() -> None:
    code = "import sys, amazonia.export.publish; assert 'tensorflow' not in sys.modules, 'tensorflow loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, env=tool_env())


# --- dvc repro while a server serves --------------------------------------------------------


class Server:
    """A running ``amazonia serve``, started and stopped by the :func:`serving` fixture."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/v1/models/{MODEL}{path}"


@pytest.fixture
def serving(pipeline_copy: Path, tmp_path: Path) -> Iterator[Server]:
    """A real server over the tiny pipeline's ``models/PlanetModel/``, polling every 0.3 s,
    logging its loads."""
    log = tmp_path / "serve.log"
    base_path = pipeline_copy / "models" / MODEL
    for proc, port in serve_models(base_path, log, MODEL, "--poll-seconds", str(POLL_SECONDS), "--verbose"):
        yield Server(proc, port, log)


class Asker(threading.Thread):
    """Asks the server the same questions in a loop and keeps every answer, until stopped."""

    def __init__(self, server: Server, questions: dict[str, tuple[str, dict]]) -> None:
        super().__init__(daemon=True)
        self.server, self.questions = server, questions
        self.answers: list[tuple[str, int, object]] = []  # (question, HTTP status, JSON or error)
        self._stop_asking = threading.Event()

    def ask(self, question: str) -> tuple[int, object]:
        path, payload = self.questions[question]
        try:
            response = requests.post(self.server.url(path), json=payload, timeout=60)
        except requests.RequestException as err:
            return 0, repr(err)
        return response.status_code, response.json()

    def run(self) -> None:
        # A pause per round leaves the CPU to the repro; a version missing from a server
        # polling every 0.3 s stays unloaded far longer than a round.
        while not self._stop_asking.wait(ROUND_PAUSE_S):
            for question in self.questions:
                self.answers.append((question, *self.ask(question)))

    def stop(self) -> None:
        self._stop_asking.set()
        self.join(timeout=120)


def questions(repo: Path) -> dict[str, tuple[str, dict]]:
    """The latest and version 1, by both signatures: random chips and real JPEG files."""
    chips = np.random.default_rng(0).random((2, SIZE, SIZE, 3)).round(4).tolist()
    jpegs = sorted((repo / "data" / "raw" / "train-jpg").glob("*.jpg"))[:2]
    files_b64 = [{"b64": base64.b64encode(p.read_bytes()).decode("ascii")} for p in jpegs]
    floats = {"signature_name": SIGNATURE_FLOAT, "instances": chips}
    encoded = {"signature_name": SIGNATURE_BYTES, "instances": files_b64}
    return {
        "latest float": (":predict", floats),
        "latest bytes": (":predict", encoded),
        "v1 float": ("/versions/1:predict", floats),
        "v1 bytes": ("/versions/1:predict", encoded),
    }


def assert_same_answers(asker: Asker, expected: dict[str, object]) -> None:
    """Every answer was a 200 equal (to float noise) to the good model's, and there were many."""
    counts = {q: sum(a[0] == q for a in asker.answers) for q in expected}
    assert min(counts.values()) >= 5, f"too few answers to watch a repro: {counts}"
    for question, status, body in asker.answers:
        assert status == 200, f"{question}: HTTP {status}: {body}"
        for prediction, good in zip(body["predictions"], expected[question]["predictions"], strict=True):
            for head, values in prediction.items():
                np.testing.assert_allclose(values, good[head], atol=1e-6, err_msg=f"{question}: {head}")


def repro_while_asked(
    repo: Path, server: Server, swapped_in: bool = False
) -> tuple[subprocess.CompletedProcess, Asker, dict]:
    """``dvc repro`` while a thread asks the server, on until ``swapped_in``: the server has
    loaded the republished version 1 and serves from it; the good answers are those asked
    before."""
    asked = questions(repo)
    probe = Asker(server, asked)
    expected = {}
    for question in asked:
        status, body = probe.ask(question)
        assert status == 200, f"{question}: HTTP {status}: {body}"
        expected[question] = body
    asker = Asker(server, asked)
    asker.start()
    try:
        done = run([DVC, "repro"], repo, check=False)
        deadline = time.monotonic() + SWAP_TIMEOUT_S
        while swapped_in and SWAPPED_IN not in server.log.read_text():
            assert time.monotonic() < deadline, f"no '{SWAPPED_IN}' in {server.log} within {SWAP_TIMEOUT_S} s"
            time.sleep(0.1)
        time.sleep(SETTLE_S)
    finally:
        asker.stop()
    return done, asker, expected


def break_the_float_signature(repo: Path) -> None:
    """The kind of bug the smoke check is for: serving_default scales its input twice."""
    source = repo / "amazonia" / "export" / "saved_model.py"
    good = "def serve_float(input_image: tf.Tensor) -> dict[str, tf.Tensor]:\n"
    good += "        return predict(input_image)"
    text = source.read_text()
    assert text.count(good) == 1, f"{source} changed: update this test's broken edit"
    source.write_text(text.replace(good, good.replace("predict(input_image)", "predict(input_image / 2.0)")))


@pytest.mark.slow
def test_a_passing_reexport_is_swapped_in_without_a_404_and_a_failing_one_is_never_served(
    pipeline_copy: Path, serving: Server
) -> None:
    """A passing re-export of the served version 1 replaces it while the server answers
    from it, never missing. Then a broken export fails its smoke check as a re-export of
    version 1, then as a new version 2 (``export.version`` reruns export and smoke_check,
    nothing else): neither is published, and the server answers from the good version 1
    throughout."""
    repo = pipeline_copy
    base = repo / "models" / MODEL
    published = repo / published_dir("models", MODEL, 1)
    folder_before = published.stat().st_ino
    # Any change in amazonia/export reruns both stages; the model itself is the same.
    with (repo / "amazonia" / "export" / "__init__.py").open("a") as init:
        init.write("# touched by a test: export again\n")

    done, asker, expected = repro_while_asked(repo, serving, swapped_in=True)

    assert done.returncode == 0, done.stderr
    assert ran_stages(done.stdout) == {"export", "smoke_check"}
    assert_same_answers(asker, expected)  # every answer a 200: version 1 was never missing
    assert published.stat().st_ino != folder_before  # a new folder, swapped in
    assert files(published) == files(repo / candidate_dir("models", MODEL, 1))
    assert sorted(p.name for p in base.iterdir()) == [".gitignore", "1"]
    assert run([DVC, "status"], repo).stdout.strip() == "Data and pipelines are up to date."

    served = files(base)
    break_the_float_signature(repo)
    for version in (1, 2):
        set_params(repo, {"export": {"version": version}})

        done, asker, expected = repro_while_asked(repo, serving)

        assert done.returncode != 0, done.stdout
        assert ran_stages(done.stdout) == {"export", "smoke_check"}, version
        candidate = candidate_dir("models", MODEL, version)
        assert f"error: smoke check of {candidate}: check 'saved model vs keras' failed" in done.stderr
        smoke = (repo / "metrics" / "smoke.json").read_text()
        assert '"passed": false' in smoke and str(candidate) in smoke
        assert_same_answers(asker, expected)
        assert files(base) == served  # not a byte changed, no version added, no temporary left
        status = requests.get(serving.url(""), timeout=30).json()["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("1", "AVAILABLE")]
