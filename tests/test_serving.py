"""``amazonia serve`` and ``amazonia predict`` end to end: real server processes on
127.0.0.1, serving a model exported by the project's own code at 32 px, spoken to
as TF Serving's REST clients speak to ``tensorflow_model_server``."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from amazonia.cli import main
from amazonia.client.predict import predict_files
from amazonia.data.labels import label_map
from amazonia.data.records.images import ImageTooLargeError, check_image
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from amazonia.export.contract import (
    ASSETS_EXTRA,
    INPUT_BYTES,
    SIGNATURE_BYTES,
    SIGNATURE_FLOAT,
    SIGNATURES,
)
from amazonia.model.names import OUTPUT_GROUND, OUTPUT_WEATHER
from tests.conftest import (
    MODEL,
    SERVER_PARAMS,
    SIZE,
    THRESHOLDS,
    Exported,
    Server,
    free_port,
    run_python,
    serving,
)
from tests.image_corpus import BOMBS

BIN = Path(sys.executable).parent
MAX_BODY_MB = SERVER_PARAMS["max_body_mb"]
POLL_SECONDS = SERVER_PARAMS["poll_seconds"]
TOLERANCE = 1e-5


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.1)


def _image(path: Path) -> np.ndarray:
    """The article's preprocessing."""
    from keras.utils import img_to_array, load_img

    return img_to_array(load_img(path, target_size=(SIZE, SIZE))) / 255.0


def _b64(path: Path) -> dict[str, str]:
    return {"b64": base64.b64encode(path.read_bytes()).decode("ascii")}


def _assert_prediction(prediction: dict) -> None:
    assert set(prediction) == {OUTPUT_WEATHER, OUTPUT_GROUND}
    assert len(prediction[OUTPUT_WEATHER]) == len(LABELS_WEATHER)
    assert len(prediction[OUTPUT_GROUND]) == len(LABELS_GROUND)
    assert sum(prediction[OUTPUT_WEATHER]) == pytest.approx(1.0, abs=1e-5)
    assert all(0 <= p <= 1 for p in prediction[OUTPUT_GROUND])


# --- status and metadata --------------------------------------------------------------------


def test_model_status_is_tf_servings_json(server: Server) -> None:
    expected = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    for path in ("", "/versions/1"):
        response = server.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == expected


def test_metadata_lists_the_signature_defs_in_tf_servings_layout(server: Server) -> None:
    body = server.get("/metadata").json()
    assert body["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    assert server.get("/versions/1/metadata").json() == body
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {SIGNATURE_FLOAT, SIGNATURE_BYTES} <= set(signatures)
    dtypes = {"float32": "DT_FLOAT", "string": "DT_STRING"}
    for name, contract in SIGNATURES.items():
        signature = signatures[name]
        assert signature["method_name"] == "tensorflow/serving/predict"
        for side in ("inputs", "outputs"):
            expected = contract.describe(SIZE)[side]
            assert set(signature[side]) == set(expected)
            for tensor, info in signature[side].items():
                assert info["dtype"] == dtypes[expected[tensor]["dtype"]]
                assert info["tensor_shape"]["unknown_rank"] is False
                # int64 sizes are JSON strings, every dim has a name, as TF Serving writes them
                assert info["tensor_shape"]["dim"] == [
                    {"size": str(size), "name": ""} for size in expected[tensor]["shape"]
                ]


def test_assets_endpoint_serves_the_exports_assets(server: Server) -> None:
    for prefix in ("", "/versions/1"):
        assert server.get(f"{prefix}/assets/label_map.json").json() == label_map()
        assert server.get(f"{prefix}/assets/thresholds.json").json() == THRESHOLDS
    missing = server.get("/assets/secrets.json")
    assert missing.status_code == 404
    assert "label_map.json" in missing.json()["error"]
    # Percent-encoded, as model names may be (a client library would unquote '%5F' itself).
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", f"/v1/models/{MODEL}/assets/label%5Fmap.json")
    assert json.loads(connection.getresponse().read()) == label_map()
    connection.close()


# --- predict --------------------------------------------------------------------------------


def test_articles_client_verbatim(server: Server, exported: Exported) -> None:
    from keras.utils import img_to_array, load_img

    path = exported.chips[0]
    PORT = server.port  # noqa: N806
    # The article's client, character for character but for host and port (and size 32).
    # fmt: off
    image = img_to_array(load_img(path, target_size=(32, 32))) / 255.
    payload = {"instances": [{'input_image': image.tolist()}]}
    r = requests.post(f'http://127.0.0.1:{PORT}/v1/models/PlanetModel:predict', json=payload)
    result = json.loads(r.content)
    # fmt: on

    assert r.status_code == 200
    assert set(result) == {"predictions"} and len(result["predictions"]) == 1
    prediction = result["predictions"][0]
    _assert_prediction(prediction)
    expected = exported.model(image[None].astype(np.float32), training=False)
    for head in (OUTPUT_WEATHER, OUTPUT_GROUND):
        np.testing.assert_allclose(prediction[head], np.asarray(expected[head])[0], atol=TOLERANCE)


def test_row_and_columnar_formats_follow_tf_servings_rules(server: Server, exported: Exported) -> None:
    images = [_image(p).tolist() for p in exported.chips[:2]]
    named = server.post(":predict", json={"instances": [{"input_image": i} for i in images]}).json()
    plain = server.post(":predict", json={"instances": images}).json()
    assert plain == named
    assert len(named["predictions"]) == 2
    for prediction in named["predictions"]:
        _assert_prediction(prediction)

    columnar = server.post(":predict", json={"signature_name": SIGNATURE_FLOAT, "inputs": images}).json()
    by_name = server.post(":predict", json={"inputs": {"input_image": images}}).json()
    assert columnar == by_name
    assert set(columnar) == {"outputs"}
    assert columnar["outputs"] == {
        head: [p[head] for p in named["predictions"]] for head in (OUTPUT_WEATHER, OUTPUT_GROUND)
    }


def test_bytes_signature_takes_b64_files_in_both_formats(server: Server, exported: Exported) -> None:
    files = [_b64(p) for p in exported.chips[:3]]
    plain = server.post(":predict", json={"signature_name": SIGNATURE_BYTES, "instances": files})
    assert plain.status_code == 200, plain.text
    named = server.post(
        ":predict", json={"signature_name": SIGNATURE_BYTES, "instances": [{INPUT_BYTES: f} for f in files]}
    ).json()
    assert plain.json() == named
    for prediction in named["predictions"]:
        _assert_prediction(prediction)
    columnar = server.post(
        ":predict", json={"signature_name": SIGNATURE_BYTES, "inputs": {INPUT_BYTES: files}}
    )
    assert columnar.json()["outputs"][OUTPUT_WEATHER] == [p[OUTPUT_WEATHER] for p in named["predictions"]]


def test_versions_by_url(server: Server, exported: Exported) -> None:
    payload = {"instances": [_image(exported.chips[0]).tolist()]}
    assert (
        server.post("/versions/1:predict", json=payload).json()
        == server.post(":predict", json=payload).json()
    )
    missing = {
        "/versions/7": "Could not find version 7 of model PlanetModel",
        "/versions/7/metadata": "Servable not found for request: Specific(PlanetModel, 7)",
        "/versions/7/assets/label_map.json": "Servable not found for request: Specific(PlanetModel, 7)",
    }
    for path, message in missing.items():
        response = server.get(path)
        assert (response.status_code, response.json()) == (404, {"error": message})
    response = server.post("/versions/7:predict", json=payload)
    assert (response.status_code, response.json()) == (
        404,
        {"error": "Servable not found for request: Specific(PlanetModel, 7)"},
    )


def _png(size: tuple[int, int], color: int, mode: str = "RGB") -> dict[str, str]:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return {"b64": base64.b64encode(buffer.getvalue()).decode("ascii")}


def test_large_batches_run_in_slices_with_the_same_answers(server: Server) -> None:
    images = [_png((8, 8), color) for color in range(150)]  # > 2 slices of MAX_CALL_BATCH
    batch = server.post(":predict", json={"signature_name": SIGNATURE_BYTES, "instances": images})
    assert batch.status_code == 200, batch.text
    predictions = batch.json()["predictions"]
    assert len(predictions) == len(images)
    for i in (0, 63, 64, 127, 128, 149):
        alone = server.post(":predict", json={"signature_name": SIGNATURE_BYTES, "instances": [images[i]]})
        for head in (OUTPUT_WEATHER, OUTPUT_GROUND):
            np.testing.assert_allclose(
                predictions[i][head], alone.json()["predictions"][0][head], atol=TOLERANCE
            )


def test_decompression_bombs_are_refused(server: Server) -> None:
    bomb = _png((4097, 4097), 0, mode="1")  # a few KB that would decode to 200 MB of floats
    response = server.post(":predict", json={"signature_name": SIGNATURE_BYTES, "instances": [bomb]})
    assert response.status_code == 400
    assert "4097x4097 pixels" in response.json()["error"]


@pytest.mark.parametrize("name", list(BOMBS))
def test_decoder_bombs_are_refused_before_the_model_decodes_them(server: Server, name: str) -> None:
    bomb = BOMBS[name]()  # within the pixel budget, seconds of CPU or gigabytes to decode
    with pytest.raises(ImageTooLargeError) as refused:
        check_image(bomb)
    instance = {"b64": base64.b64encode(bomb).decode()}
    response = server.post(":predict", json={"signature_name": SIGNATURE_BYTES, "instances": [instance]})
    assert response.status_code == 400
    assert response.json()["error"] == f"input '{INPUT_BYTES}': {refused.value}"


# --- errors ---------------------------------------------------------------------------------


def _float_instance(shape: tuple[int, ...] = (SIZE, SIZE, 3)) -> list:
    return np.full(shape, 0.5, dtype=np.float32).tolist()


def _with_first_value(value: object) -> list:
    """One 32x32x3 instance of 0.5 whose first value is ``value``."""
    instance = _float_instance()
    instance[0][0][0] = value
    return [instance]


# case -> (body: raw text, or an object sent as JSON; part of the expected error message)
BAD_REQUESTS = {
    "malformed JSON": ('{"instances": [[0.1, 0.2', "JSON Parse error"),
    "empty body": ("", "JSON Parse error: The document is empty"),
    "not an object": ("[1, 2]", "Is not object"),
    "wrong shape": ({"instances": [_float_instance((30, 30, 3))]}, "has shape [1, 30, 30, 3]"),
    "wrong rank": ({"inputs": _float_instance()}, "has shape [32, 32, 3]"),
    "instances of different shapes": (
        {"instances": [_float_instance(), _float_instance((32, 31, 3))]},
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting tensor size: 3072 but got: 2976",
    ),
    "ragged lists": (
        {"instances": [[*_float_instance()[:-1], _float_instance((31, 3))]]},
        "Encountered list at unexpected size: 31 at level: 1 expected size: 32",
    ),
    "wrong dtype": ({"instances": [np.full((SIZE, SIZE, 3), "x").tolist()]}, "Type: String"),
    "bool among floats": (
        {"instances": _with_first_value(True)},
        "Type: True is not of expected type: float",
    ),
    "null among floats": ({"instances": _with_first_value(None)}, "Type: Null"),
    "both instances and inputs": (
        {"instances": [_float_instance()], "inputs": [_float_instance()]},
        "expecting only one of 'inputs' or 'instances' keys to exist",
    ),
    "neither instances nor inputs": (
        {"signature_name": SIGNATURE_FLOAT},
        "Missing 'inputs' or 'instances' key",
    ),
    "empty instances": ({"instances": []}, "No values in 'instances' array"),
    "unknown signature": (
        {"signature_name": "nope", "instances": [_float_instance()]},
        'Serving signature name: "nope" not found in signature def',
    ),
    "signature name not a string": ({"signature_name": 3, "instances": [1]}, "must be a string value"),
    "unknown named input": (
        {"instances": [{"pixels": _float_instance()}]},
        "does not have named input: pixels",
    ),
    "bytes that are no image": (
        {"signature_name": SIGNATURE_BYTES, "instances": [{"b64": base64.b64encode(b"no image").decode()}]},
        "Unknown image file format",
    ),
    "invalid base64": (
        {"signature_name": SIGNATURE_BYTES, "instances": [{"b64": "%%%"}]},
        "Unable to base64 decode",
    ),
    "number where bytes needed": ({"signature_name": SIGNATURE_BYTES, "instances": [5]}, "Type: Number"),
    "deeply nested": ("[" * 100_000 + "]" * 100_000, "JSON Parse error: The document is nested too deeply"),
    "deeply nested instances": (
        '{"instances": ' + "[" * 20_000 + "]" * 20_000 + "}",
        "JSON Parse error: The document is nested too deeply",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_are_400_with_tf_servings_error_body(server: Server, case: str) -> None:
    body, message = BAD_REQUESTS[case]
    assert message, "an empty expected message would check nothing"
    data = body if isinstance(body, str) else json.dumps(body)
    response = server.post(":predict", data=data.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert set(error) == {"error"} and message in error["error"]


def test_unknown_model_is_404_on_every_endpoint(server: Server) -> None:
    base = f"http://127.0.0.1:{server.port}/v1/models/Nope"
    checks = [
        (requests.get(base, timeout=10), "Could not find any versions of model Nope"),
        (requests.get(base + "/metadata", timeout=10), "Servable not found for request: Latest(Nope)"),
        (requests.post(base + ":predict", json={"instances": [1]}, timeout=10), "Latest(Nope)"),
    ]
    for response, message in checks:
        assert response.status_code == 404
        assert message in response.json()["error"]


def test_unknown_paths_are_malformed_requests(server: Server) -> None:
    for method, path in [("POST", ""), ("GET", ":predict"), ("GET", "/versions/x"), ("PUT", ":predict")]:
        response = requests.request(method, server.model_url + path, timeout=10)
        assert response.status_code == 400
        assert response.json() == {"error": f"Malformed request: {method} /v1/models/{MODEL}{path}"}


def test_bodies_over_the_limit_are_413_declared_or_streamed(server: Server) -> None:
    limit = int(MAX_BODY_MB * 2**20)
    too_big = b'{"instances": [' + b"0.5, " * (limit // 5) + b"0.5]}"
    declared = server.post(":predict", data=too_big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    assert "limit" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for start in range(0, len(too_big), 64 * 1024):
            yield too_big[start : start + 64 * 1024]

    streamed = server.post(":predict", data=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert server.get().status_code == 200  # and it still serves


# --- load -----------------------------------------------------------------------------------


def test_concurrent_clients_on_both_signatures_get_every_answer(server: Server, exported: Exported) -> None:
    # Eight clients at once, each alternating the signatures. Sustained load (hundreds of
    # requests, any failure an error) is bench/serving.py's throughput run.
    bodies = [
        json.dumps({"instances": [{"input_image": _image(exported.chips[0]).tolist()}]}).encode(),
        json.dumps({"signature_name": SIGNATURE_BYTES, "instances": [_b64(exported.chips[1])]}).encode(),
    ]
    clients, per_client = 8, 8
    failures: list[str] = []

    def client(index: int) -> None:
        with requests.Session() as session:
            for i in range(per_client):
                try:
                    response = session.post(
                        server.model_url + ":predict",
                        data=bodies[(index + i) % 2],
                        headers={"Content-Type": "application/json"},
                        timeout=60,
                    )
                    if response.status_code != 200 or len(response.json()["predictions"]) != 1:
                        failures.append(f"{response.status_code}: {response.text[:200]}")
                except Exception as err:  # noqa: BLE001 - every failure is counted, not raised
                    failures.append(repr(err))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# --- versions appear while it runs ----------------------------------------------------------


@pytest.fixture
def reload_server(exported: Exported, tmp_path: Path) -> Iterator[Server]:
    """A second server over a private copy of the model folder, which tests change."""
    base = tmp_path / "models" / MODEL
    shutil.copytree(exported.base_path / "1", base / "1")
    yield from serving(base, tmp_path, SERVER_PARAMS)


def _served_version(server: Server) -> str:
    return server.get("/metadata").json()["model_spec"]["version"]


def _listed(server: Server) -> dict[str, str]:
    return {s["version"]: s["state"] for s in server.get().json()["model_version_status"]}


def test_version_folders_are_picked_up_as_tf_serving_reads_them(
    reload_server: Server, exported: Exported
) -> None:
    base = Path(reload_server.log).parent / "models" / MODEL
    payload = {"instances": [_image(exported.chips[0]).tolist()]}

    # Written under a temporary name, as the export stage does: invisible until renamed.
    shutil.copytree(base / "1", base / ".tmp-2")
    time.sleep(5 * POLL_SECONDS)
    assert _listed(reload_server) == {"1": "AVAILABLE"}
    (base / ".tmp-2").rename(base / "2")
    _wait_for(lambda: _served_version(reload_server) == "2")
    assert _listed(reload_server) == {"2": "AVAILABLE", "1": "AVAILABLE"}
    assert reload_server.post("/versions/1:predict", json=payload).status_code == 200
    assert reload_server.post(":predict", json=payload).status_code == 200

    # A truncated saved_model.pb and a garbage one: reported as TF Serving reports a
    # failed load (state END, an error status), never served.
    pb = (base / "2" / "saved_model.pb").read_bytes()
    for version, content in (("3", pb[: len(pb) // 2]), ("4", b"\x00garbage" * 100)):
        shutil.copytree(base / "1" / "variables", base / version / "variables")
        (base / version / "saved_model.pb").write_bytes(content)
    (base / "5-draft").mkdir()  # not an integer: ignored
    _wait_for(lambda: {"3", "4"} <= set(_listed(reload_server)))
    time.sleep(3 * POLL_SECONDS)
    assert _listed(reload_server) == {"4": "END", "3": "END", "2": "AVAILABLE", "1": "AVAILABLE"}
    failed = reload_server.get("/versions/3").json()["model_version_status"][0]["status"]
    assert failed["error_code"] == "DATA_LOSS"
    assert failed["error_message"].startswith("version 3: saved_model.pb: not a readable SavedModel")
    assert _served_version(reload_server) == "2"
    for version in ("3", "4"):
        response = reload_server.post(f"/versions/{version}:predict", json=payload)
        assert response.status_code == 404
    assert reload_server.post(":predict", json=payload).status_code == 200

    # Loadable models under names TF Serving skips: digits that are not ASCII, and a
    # number past int64 (it would have become the default version).
    for name in ("\u0667", "\uff18", "\u0669\u0669", "9223372036854775808"):
        shutil.copytree(base / "1", base / name)
    # A saved_model.pb claiming 1 GiB (sparse: a few blocks on disk), refused unread.
    (base / "5" / "variables").mkdir(parents=True)
    with (base / "5" / "saved_model.pb").open("wb") as sparse:
        sparse.truncate(2**30)
    # A version without assets.extra/: served, and its assets endpoint says why not.
    shutil.copytree(base / "1", base / "0", ignore=shutil.ignore_patterns(ASSETS_EXTRA))
    _wait_for(lambda: {"5", "0"} <= set(_listed(reload_server)))
    time.sleep(3 * POLL_SECONDS)  # the other folders had as many polls to show up
    assert _listed(reload_server) == {
        "5": "END", "4": "END", "3": "END", "2": "AVAILABLE", "1": "AVAILABLE", "0": "AVAILABLE"
    }  # fmt: skip
    assert _served_version(reload_server) == "2"

    too_large = reload_server.get("/versions/5").json()["model_version_status"][0]["status"]
    assert too_large["error_code"] == "RESOURCE_EXHAUSTED"
    assert too_large["error_message"].startswith(
        "version 5: saved_model.pb is 1,073,741,824 bytes, more than this server's limit of 268,435,456 "
        "(serve.max_saved_model_mb); not read."
    )
    no_assets = reload_server.get("/versions/0/assets/label_map.json")
    assert no_assets.status_code == 404
    assert no_assets.json()["error"].startswith("version 0: assets.extra/label_map.json: missing")
    # Answers name versions and the files in them, never where the server keeps them.
    answers = [
        reload_server.get().text,
        reload_server.get("/versions/5").text,
        reload_server.get("/versions/0/metadata").text,
        no_assets.text,
    ]
    server_root = str(Path(reload_server.log).parent)
    assert not [answer for answer in answers if server_root in answer or str(base) in answer]
    response = reload_server.get("/versions/9223372036854775808")
    assert (response.status_code, response.json()) == (
        400,
        {"error": "Failed to convert version: 9223372036854775808 to numeric."},
    )


# --- the predict client ---------------------------------------------------------------------


def _cli_env() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)
    return env


def test_predict_prints_one_line_per_image(server: Server, exported: Exported) -> None:
    chips = [str(p) for p in exported.chips[:3]]
    result = subprocess.run(
        [str(BIN / "amazonia"), "predict", *chips, "--url", server.model_url],
        capture_output=True, text=True, env=_cli_env(), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(chips)
    for chip, line in zip(chips, lines):
        assert line.startswith(f"{chip}: ")
        assert line.split(": ", 1)[1].split(" ")[0] in LABELS_WEATHER
        assert "; ground: " in line
    # The same tags as the JSON output, which the next test checks against the thresholds.
    assert lines == [tagged.describe() for tagged in predict_files(chips, server.model_url)]


def test_predict_json_matches_the_server_and_thresholds(
    server: Server, exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    chips = exported.chips[:2]
    assert main(["predict", *map(str, chips), "--url", server.model_url, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    raw = server.post(
        ":predict", json={"signature_name": SIGNATURE_BYTES, "instances": [_b64(c) for c in chips]}
    )
    for chip, result, prediction in zip(chips, results, raw.json()["predictions"]):
        assert result["image"] == str(chip) and result["model_version"] == 1
        weather = prediction[OUTPUT_WEATHER]
        best = int(np.argmax(weather))
        assert result["weather"] == {"tag": LABELS_WEATHER[best], "probability": weather[best]}
        ground = dict(zip(LABELS_GROUND, prediction[OUTPUT_GROUND]))
        on = {label for label, p in ground.items() if p >= THRESHOLDS["ground"][label]}
        assert [g["tag"] for g in result["ground"]] == sorted(on, key=lambda label: -ground[label])
        for tag in result["ground"]:
            assert tag["probability"] == ground[tag["tag"]]
            assert tag["threshold"] == THRESHOLDS["ground"][tag["tag"]]
        assert result["tags"] == [LABELS_WEATHER[best], *(g["tag"] for g in result["ground"])]
        assert result["scores"] == {
            OUTPUT_WEATHER: dict(zip(LABELS_WEATHER, weather)),
            OUTPUT_GROUND: ground,
        }
        # These chips tell a mix-up apart: thresholds taken in reverse label order tag them otherwise.
        mixed_up = dict(zip(LABELS_GROUND, reversed(THRESHOLDS["ground"].values())))
        assert on != {label for label, p in ground.items() if p >= mixed_up[label]}


def test_predict_reads_assets_from_model_dir_when_the_server_has_none(
    server: Server, exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Real TF Serving has no assets endpoint: --model-dir reads assets.extra/ instead.
    assert (exported.base_path / "1" / ASSETS_EXTRA).is_dir()
    chip = str(exported.chips[0])
    args = ["predict", chip, "--url", server.model_url, "--json"]
    assert main(args) == 0
    from_server = json.loads(capsys.readouterr().out)
    assert main([*args, "--model-dir", str(exported.base_path)]) == 0
    assert json.loads(capsys.readouterr().out) == from_server

    # Proof that --model-dir is what is read: a copy whose thresholds differ from the server's.
    copy = tmp_path / MODEL
    shutil.copytree(exported.base_path, copy)
    every_ground_tag = {"ground": dict.fromkeys(LABELS_GROUND, 0.0)}
    (copy / "1" / ASSETS_EXTRA / "thresholds.json").write_text(json.dumps(every_ground_tag))
    assert main([*args, "--model-dir", str(copy)]) == 0
    (from_disk,) = json.loads(capsys.readouterr().out)
    assert {g["tag"] for g in from_disk["ground"]} == set(LABELS_GROUND)
    assert {g["threshold"] for g in from_disk["ground"]} == {0.0}
    assert from_disk["scores"] == from_server[0]["scores"]


def test_predict_missing_file_is_a_one_line_error(
    server: Server, exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such.jpg"
    assert main(["predict", str(exported.chips[0]), str(missing), "--url", server.model_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines[-1:] and "Traceback" not in captured.err, captured.err
    assert errors[0].startswith(f"error: {missing}: cannot read it")


def _noise_png(path: Path, seed: int) -> Path:
    """A 256x256 PNG of noise: ~197 KB, as PNG cannot compress noise."""
    pixels = np.random.default_rng(seed).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_predict_sends_a_batch_over_the_servers_body_limit_file_by_file(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each file's request fits MAX_BODY_MB; any two together do not, and are refused (413).
    images = [str(_noise_png(tmp_path / f"noise{i}.png", seed=i)) for i in range(3)]
    assert all(4 * os.path.getsize(i) / 3 < MAX_BODY_MB * 2**20 < 8 * os.path.getsize(i) / 3 for i in images)
    assert main(["predict", *images, "--url", server.model_url]) == 0
    captured = capsys.readouterr()
    assert [line.split(": ")[0] for line in captured.out.splitlines()] == images
    assert captured.err == ""


def test_predict_a_file_over_the_servers_body_limit_is_a_one_line_error(
    server: Server, exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.jpg"
    big.write_bytes(os.urandom(int(MAX_BODY_MB * 2**20)))  # its base64 alone is over the limit
    assert main(["predict", str(exported.chips[0]), str(big), "--url", server.model_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    size, limit = big.stat().st_size, int(MAX_BODY_MB * 2**20)
    wrapping = len('{"signature_name":"serving_bytes","instances":[{"image_bytes":{"b64":""}}]}')
    request = wrapping + 4 * ((size + 2) // 3)
    assert captured.err == (
        f"error: {big}: {size} bytes ({request} as a request) is more than the server takes "
        f"(HTTP 413: Request body of {request} bytes is larger than this server's limit of {limit} bytes "
        "(serve.max_body_mb, --max-body-mb); send fewer instances per request); send a smaller image, or "
        "raise the server's limit (amazonia serve --max-body-mb)\n"
    )


def test_predict_unreachable_server_is_a_one_line_error(exported: Exported) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/models/{MODEL}"
    result = subprocess.run(
        [str(BIN / "amazonia"), "predict", str(exported.chips[0]), "--url", url],
        capture_output=True, text=True, env=_cli_env(), timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    # Whatever else lands on stderr (a library's start-up noise), the error is one line,
    # the last, and no traceback.
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines[-1:], result.stderr
    assert errors[0].startswith(
        f"error: cannot reach the model server at {url}/metadata (Connection refused)"
    )


# Modules a client (or the serving contract's readers) imports: no TensorFlow or Keras.
LIGHT_MODULES = (
    "amazonia.client.predict",
    "amazonia.export.contract",
    "amazonia.model.names",
    "amazonia.serving.params",  # amazonia predict reads serve: too
)
HEAVY = ("tensorflow", "keras", "tf_keras")


def heavy_imports_after(code: str, cwd: Path) -> list[str]:
    """The HEAVY packages a fresh interpreter has loaded once it has run ``code``."""
    report = (
        "import json, sys\n"
        f"print(json.dumps(sorted({{name.split('.')[0] for name in sys.modules}} & {set(HEAVY)!r})))\n"
    )
    return json.loads(run_python(f"{code}\n{report}", cwd=cwd).stdout.splitlines()[-1])


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_import_without_tensorflow(module: str, tmp_path: Path) -> None:
    assert heavy_imports_after(f"import {module}", tmp_path) == []


def test_predict_command_runs_without_tensorflow(exported: Exported, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/models/{MODEL}"
    code = (
        "from amazonia.cli import main\n"
        f"assert main(['predict', {str(exported.chips[0])!r}, '--url', {url!r}]) == 1\n"
    )
    assert heavy_imports_after(code, tmp_path) == []


def test_the_served_socket_says_it_is_tcp_so_asyncio_turns_nagle_off() -> None:
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; a socket made with
    # proto 0 kept Nagle on, and delayed ACKs then added ~40 ms to every answer (p50 48 ms
    # instead of 6 ms in `make bench`).
    import asyncio.base_events

    from amazonia.cli import bind

    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        sock.listen()
        client = socket.create_connection(sock.getsockname())
        accepted, _ = sock.accept()
        with client, accepted:
            asyncio.base_events._set_nodelay(accepted)  # what the event loop does on accept
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
