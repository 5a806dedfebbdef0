"""``amazonia serve`` run as TF Serving users run it: a model config file with several
models, version policies and version labels, re-read while it serves; Prometheus metrics
at TF Serving's path; warmup requests replayed before a version answers.

One server (module scope) serves two models of a config file, copies of the session's
exported 32 px model:

* ``PlanetModel``: versions 1 and 2 (``specific``), labelled ``stable`` and ``canary``;
  version 2 has a warmup file of :data:`WARMUP_REQUESTS` requests, both signatures;
* ``Second``: versions 1, 2 and 3 under ``latest { num_versions: 2 }``, version 3 with
  a warmup file that is not a TFRecord file.

Each copy's ``thresholds.json`` holds a mark, so the assets endpoint shows which copy
answered.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from amazonia.client.predict import predict_files
from amazonia.data.vocabulary import LABELS_GROUND
from amazonia.export.contract import (
    ASSETS_EXTRA,
    INPUT_BYTES,
    SIGNATURE_BYTES,
    SIGNATURE_FLOAT,
    THRESHOLDS_ASSET,
)
from amazonia.export.warmup import WarmupRequest, warmup_requests_path, write_warmup_requests
from amazonia.model.names import INPUT_NAME
from tests.conftest import BIN, SIZE, Exported, free_port, serve_models, tool_env

MODEL, SECOND = "PlanetModel", "Second"
POLL_SECONDS = 0.3
WAIT_S = 60.0  # a bound on waiting for the server to act, not a timing assertion
WARMUP_REQUESTS = 3
MARKS = {(MODEL, 1): 0.25, (MODEL, 2): 0.75, (SECOND, 1): 0.1, (SECOND, 2): 0.2, (SECOND, 3): 0.3}
ZEROS = {"instances": [np.zeros((SIZE, SIZE, 3)).tolist()]}
METRICS_PATH = "/monitoring/prometheus/metrics"


def config_text(stable: int = 1, canary: int = 2) -> str:
    return f"""
model_config_list {{
  config {{
    name: "{MODEL}"
    base_path: "{MODEL}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: {stable} }}
    version_labels {{ key: "canary" value: {canary} }}
  }}
  config {{
    name: "{SECOND}"
    base_path: "{SECOND}"
    model_platform: "tensorflow"
    model_version_policy {{ latest {{ num_versions: 2 }} }}
  }}
}}
"""


def marked_copy(version_dir: Path, dest: Path, mark: float) -> None:
    shutil.copytree(version_dir, dest)
    path = dest / ASSETS_EXTRA / THRESHOLDS_ASSET
    thresholds = json.loads(path.read_text())
    thresholds["ground"][LABELS_GROUND[0]] = mark
    path.write_text(json.dumps(thresholds))


def write_atomically(path: Path, text: str) -> None:
    """As a deploy writes a config: the server never reads it half-written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class ConfigServer:
    port: int
    config: Path
    log: Path

    def url(self, model: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/v1/models/{model}{path}"

    def get(self, model: str, path: str = "") -> requests.Response:
        return requests.get(self.url(model, path), timeout=30)

    def predict(self, model: str, path: str = "", body: dict = ZEROS) -> requests.Response:
        return requests.post(self.url(model, path + ":predict"), json=body, timeout=60)

    def mark(self, model: str, path: str) -> float | None:
        """The mark of the copy that answers ``path`` (``/labels/stable``...); None if none does."""
        response = self.get(model, f"{path}/assets/{THRESHOLDS_ASSET}")
        return response.json()["ground"][LABELS_GROUND[0]] if response.status_code == 200 else None

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        response = requests.get(f"http://127.0.0.1:{self.port}{METRICS_PATH}", timeout=30)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        return parse_metrics(response.text)

    def wait_for_log(self, text: str) -> None:
        wait_for(lambda: text in self.log.read_text(), f"{text!r} in the server's log")


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """``{(sample name as written, labels): value}`` of a text-format page, which must
    also parse with prometheus-client's own parser."""
    list(text_string_to_metric_families(text))
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, labels, value = SAMPLE.match(line).groups()
            samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples


def sample(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S:g} s for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(exported: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfigServer]:
    root = tmp_path_factory.mktemp("model-config")
    source = exported.base_path / "1"
    for (model, version), mark in MARKS.items():
        marked_copy(source, root / model / str(version), mark)
    chips = [path.read_bytes() for path in exported.chips[:2]]
    rng = np.random.default_rng(0)
    write_warmup_requests(
        root / MODEL / "2",
        [
            WarmupRequest(SIGNATURE_FLOAT, {INPUT_NAME: rng.random((2, SIZE, SIZE, 3), dtype=np.float32)}),
            WarmupRequest(SIGNATURE_BYTES, {INPUT_BYTES: np.array(chips, dtype=object)}),
            WarmupRequest(SIGNATURE_FLOAT, {INPUT_NAME: rng.random((1, SIZE, SIZE, 3), dtype=np.float32)}),
        ],
    )
    warmup_requests_path(root / SECOND / "3").write_bytes(b"not a TFRecord file")
    config = root / "models.config"
    config.write_text(config_text())
    log = root / "serve.log"
    options = ("--model_config_file", str(config), "--model_config_file_poll_wait_seconds", str(POLL_SECONDS))
    for _, port in serve_models(None, log, MODEL, *options, "--poll-seconds", str(POLL_SECONDS)):
        yield ConfigServer(port, config, log)


# --- models, policies, labels ------------------------------------------------------------------


def test_each_model_serves_the_versions_its_policy_keeps(server: ConfigServer) -> None:
    states = {
        model: {s["version"]: s["state"] for s in server.get(model).json()["model_version_status"]}
        for model in (MODEL, SECOND)
    }
    assert states == {MODEL: {"2": "AVAILABLE", "1": "AVAILABLE"}, SECOND: {"3": "END", "2": "AVAILABLE"}}
    # latest { num_versions: 2 }: version 1 is left unloaded; the highest loaded answers.
    assert server.get(SECOND, "/versions/1").json() == {
        "error": f"Could not find version 1 of model {SECOND}"
    }
    assert server.get(SECOND, "/metadata").json()["model_spec"]["version"] == "2"
    assert server.mark(SECOND, "") == MARKS[SECOND, 2]


def test_requests_by_label_reach_the_labelled_version(server: ConfigServer) -> None:
    for label, version in (("stable", 1), ("canary", 2)):
        assert server.get(MODEL, f"/labels/{label}/metadata").json()["model_spec"]["version"] == str(version)
        assert server.mark(MODEL, f"/labels/{label}") == MARKS[MODEL, version]
        assert server.predict(MODEL, f"/labels/{label}").status_code == 200


def test_amazonia_predict_sends_every_request_to_the_version_a_label_names(
    server: ConfigServer, exported: Exported
) -> None:
    tagged = list(predict_files(exported.chips[:2], server.url(MODEL, "/labels/canary")))
    assert [t.version for t in tagged] == [2, 2]
    thresholds = [t.thresholds[LABELS_GROUND[0]] for t in tagged]
    assert thresholds == [MARKS[MODEL, 2]] * 2  # the assets of the labelled version too


def test_an_unknown_label_is_tf_servings_error(server: ConfigServer) -> None:
    message = {"error": "Unrecognized servable version label: nope"}
    for response in (server.predict(MODEL, "/labels/nope"), server.get(MODEL, "/labels/nope/metadata")):
        assert (response.status_code, response.json()) == (400, message)
    assert server.predict(SECOND, "/labels/stable").json() == {
        "error": "Unrecognized servable version label: stable"
    }
    assert server.get(MODEL, "/labels/nope").status_code == 200  # the status ignores a label, as TF Serving's


# --- warmup -------------------------------------------------------------------------------------


def test_a_version_answers_only_after_its_warmup_requests_are_replayed(server: ConfigServer) -> None:
    metrics = server.metrics()
    # Counted as the load replays them, before the version joins the served ones.
    assert (
        sample(metrics, ":amazonia:serving:warmup_request_count", model_name=MODEL, version="2")
        == WARMUP_REQUESTS
    )
    warmups = ":tensorflow:serving:model_warmup_latency_count"
    assert sample(metrics, warmups, model_path=f"{MODEL}/2", status="OK") == 1
    assert sample(metrics, warmups, model_path=f"{MODEL}/1", status="OK") == 0  # no file, no replay
    # A warmup file TF Serving could not replay fails the load: the version never answers.
    failed = server.get(SECOND, "/versions/3").json()["model_version_status"][0]
    assert failed["state"] == "END"
    assert failed["status"]["error_code"] == "DATA_LOSS"
    assert failed["status"]["error_message"].startswith(
        "version 3: warmup failed: assets.extra/tf_serving_warmup_requests: record 0 is unreadable"
    )
    assert "Please verify your warmup data is in TFRecord format" in failed["status"]["error_message"]
    assert server.get(SECOND, "/versions/3/metadata").status_code == 404
    assert sample(metrics, warmups, model_path=f"{SECOND}/3", status="DATA_LOSS") >= 1


# --- metrics ------------------------------------------------------------------------------------


def test_metrics_count_requests_by_model_version_signature_and_status(server: ConfigServer) -> None:
    before = server.metrics()
    for _ in range(3):
        assert server.predict(MODEL, "/labels/canary").status_code == 200
    assert server.predict(MODEL, "", {"instances": [[1.0]]}).status_code == 400
    assert server.predict("NoSuchModel").status_code == 404
    after = server.metrics()

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    # TF Serving's names, labels and statuses, counters without a _total suffix.
    assert grew(":tensorflow:serving:request_count", model_name=MODEL, status="OK") == 3
    assert grew(":tensorflow:serving:request_count", model_name=MODEL, status="INVALID_ARGUMENT") == 1
    assert grew(":tensorflow:serving:request_count", model_name="", status="NOT_FOUND") == 1
    latency = {"model_name": MODEL, "API": "Predict", "entrypoint": "REST"}
    assert grew(":tensorflow:serving:request_latency_count", **latency) == 3  # successful ones
    assert sample(after, ":tensorflow:serving:request_latency_bucket", **latency, le="+Inf") == sample(
        after, ":tensorflow:serving:request_latency_count", **latency
    )
    bounds = [
        dict(labels)["le"]
        for (name, labels) in after
        if name == ":tensorflow:serving:request_latency_bucket" and dict(labels)["model_name"] == MODEL
    ]
    assert bounds[:4] + bounds[-2:] == ["10", "18", "32.4", "58.32", "1.47476e+09", "+Inf"]  # TF Serving's
    by_version = {"model_name": MODEL, "version": "2", "signature_name": SIGNATURE_FLOAT}
    assert grew(":amazonia:serving:request_count", **by_version, status="OK") == 3
    assert grew(":amazonia:serving:request_latency_count", **by_version) == 3
    # Loads, and what is served now.
    for model, version in ((MODEL, 1), (MODEL, 2), (SECOND, 2)):
        path = f"{model}/{version}"
        assert (
            sample(after, ":tensorflow:cc:saved_model:load_attempt_count", model_path=path, status="success")
            == 1
        )
        assert sample(after, ":tensorflow:cc:saved_model:load_latency", model_path=path) > 0
    assert (
        sample(
            after, ":tensorflow:cc:saved_model:load_attempt_count", model_path=f"{SECOND}/3", status="fail"
        )
        >= 1
    )
    states = {
        (dict(labels)["model_name"], dict(labels)["version"], dict(labels)["state"])
        for (name, labels) in after
        if name == ":amazonia:serving:model_version_state"
    }
    assert states == {
        (MODEL, "1", "AVAILABLE"),
        (MODEL, "2", "AVAILABLE"),
        (SECOND, "2", "AVAILABLE"),
        (SECOND, "3", "END"),
    }
    assert (
        sample(after, ":amazonia:serving:model_version_label", model_name=MODEL, label="canary", version="2")
        == 1
    )


# --- the config re-read ---------------------------------------------------------------------------


def test_stable_moves_to_the_new_version_while_serving_without_a_failed_request(server: ConfigServer) -> None:
    refused: list[str] = []
    answered = 0
    stop = threading.Event()

    def ask() -> None:
        nonlocal answered
        with requests.Session() as session:
            while not stop.is_set():
                response = session.post(server.url(MODEL, "/labels/stable:predict"), json=ZEROS, timeout=60)
                answered += 1
                if response.status_code != 200:
                    refused.append(f"HTTP {response.status_code} {response.text[:200]}")

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    try:
        time.sleep(2 * POLL_SECONDS)
        write_atomically(server.config, config_text(stable=2))
        wait_for(lambda: server.mark(MODEL, "/labels/stable") == MARKS[MODEL, 2], "stable to name version 2")
        time.sleep(2 * POLL_SECONDS)
    finally:
        stop.set()
        asker.join()
        write_atomically(server.config, config_text())
        wait_for(lambda: server.mark(MODEL, "/labels/stable") == MARKS[MODEL, 1], "stable back on version 1")
    assert refused == []
    assert answered > 0


def test_a_config_that_cannot_be_applied_is_logged_and_the_last_good_one_serves(server: ConfigServer) -> None:
    try:
        write_atomically(server.config, "model_config_list { config { name: ")
        server.wait_for_log(f"ERROR amazonia.serving.manager: {server.config}: Invalid protobuf file")
        assert server.mark(MODEL, "/labels/stable") == MARKS[MODEL, 1]
        # A label may only name a version that is served (TF Serving's rule): refused whole.
        write_atomically(server.config, config_text(stable=7, canary=1))
        server.wait_for_log(
            f"{server.config}: Request to assign label to version 7 of model {MODEL}, which is not currently "
            "available for inference (label 'stable')"
        )
        assert (server.mark(MODEL, "/labels/stable"), server.mark(MODEL, "/labels/canary")) == (
            MARKS[MODEL, 1],
            MARKS[MODEL, 2],
        )
        assert "Traceback" not in server.log.read_text()
    finally:
        write_atomically(server.config, config_text())


# --- at start -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, message",
    [
        (
            "model_config_list { config { name: }",
            "Invalid protobuf file: not a ModelServerConfig in text format",
        ),
        (
            'model_config_list { config { name: "a" base_path: "a" model_platform: "tensorflow" } '
            'config { name: "a" base_path: "a" model_platform: "tensorflow" } }',
            "Illegal to list model a multiple times in config list",
        ),
        (
            'model_config_list { config { name: "a" base_path: "a" } }',
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform",
        ),
        (
            'model_config_list { config { name: "a" base_path: "a" model_platform: "tensorflow" '
            'version_labels { key: "stable" value: 1 } } }',
            "Request to assign label to version 1 of model a, which is not currently available for inference",
        ),
        ("", "the model config file names no model"),
    ],
    ids=["not text format", "a name twice", "no platform", "label of no version", "empty"],
)
def test_a_config_file_that_cannot_be_served_fails_the_start_in_one_line(
    tmp_path: Path, config: str, message: str
) -> None:
    (tmp_path / "a").mkdir()  # a model folder with no version yet
    (tmp_path / "models.config").write_text(config)
    command = [
        str(BIN / "amazonia"),
        "serve",
        "--port",
        str(free_port()),
        "--model_config_file",
        "models.config",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, env=tool_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: models.config: {message}"), result.stderr
    assert "Traceback" not in result.stderr
