"""``amazonia serve`` under hostile and unlucky input: TF Serving's REST protocol exactly
(check order, number ranges, gzip, lenient base64), bounded connections, and a fuzz run;
``amazonia serve``/``predict`` command lines that end in one-line errors. Real server
processes on 127.0.0.1, as in test_serving.py."""

from __future__ import annotations

import base64
import gzip
import io
import json
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from amazonia.data.labels import label_map
from amazonia.export.contract import INPUT_BYTES, SIGNATURE_BYTES
from amazonia.export.saved_model import export_saved_model
from amazonia.model.network import build_model
from tests.conftest import serve_models
from tests.test_serving import MODEL, SIZE, THRESHOLDS, Server, heavy_imports_after

BIN = Path(sys.executable).parent
MAX_BODY_MB = 0.5
LIMIT = int(MAX_BODY_MB * 2**20)
READ_TIMEOUT_S = 3  # short, so that the timeout tests wait little; loopback bodies take milliseconds
SOCKET_WAIT_S = 60  # a generous bound on any wait for the server: a failure, not a measurement


@pytest.fixture(scope="module")
def base_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 32 px model exported as version 1."""
    root = tmp_path_factory.mktemp("hostile") / MODEL
    keras.utils.set_random_seed(0)
    export_saved_model(build_model(SIZE), root / "1", label_map(), THRESHOLDS)
    return root


@pytest.fixture(scope="module")
def server(base_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("hostile-log") / "serve.log"
    options = (
        "--max-body-mb", str(MAX_BODY_MB), "--read-timeout", str(READ_TIMEOUT_S),
        "--keep-alive", str(READ_TIMEOUT_S),
    )  # fmt: skip
    for proc, port in serve_models(base_path, log, MODEL, *options):
        yield Server(proc, port, log)


def _post(server: Server, path: str, body: bytes, **headers: str) -> requests.Response:
    return requests.post(
        server.model_url + path,
        data=body,
        headers={"Content-Type": "application/json", **headers},
        timeout=SOCKET_WAIT_S,
    )


def _error(response: requests.Response) -> tuple[int, str]:
    """Status and TF Serving's ``{"error": ...}`` message; fails on any other body."""
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert set(body) == {"error"}, body
    return response.status_code, body["error"]


def _float_body(first: str = "0.5") -> bytes:
    """One 32x32x3 instance of 0.5 whose first value is the JSON text ``first``, verbatim."""
    instance = np.full((SIZE, SIZE, 3), 0.5).tolist()
    instance[0][0][0] = "FIRST"
    return json.dumps({"instances": [instance]}).replace('"FIRST"', first).encode()


def _png(size: int = 8, color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _encoded(fmt: str, size: int = 16) -> bytes:
    """A small noisy image in ``fmt``."""
    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def _bytes_body(b64: str) -> bytes:
    return json.dumps({"signature_name": SIGNATURE_BYTES, "instances": [{"b64": b64}]}).encode()


# --- check order and URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["{}", '{"instances": []}', '{"instances": 5}', '{"instances": [1], "inputs": [1]}', '{"inputs": {}}'],
)
def test_an_unknown_model_is_404_whatever_the_envelope(server: Server, body: str) -> None:
    # TF Serving parses the body, looks the model up, and only then reads instances/inputs.
    nope = f"http://127.0.0.1:{server.port}/v1/models/Nope:predict"
    response = requests.post(nope, data=body, timeout=SOCKET_WAIT_S)
    assert _error(response) == (404, "Servable not found for request: Latest(Nope)")
    response = _post(server, "/versions/7:predict", body.encode())
    assert _error(response) == (404, f"Servable not found for request: Specific({MODEL}, 7)")


def test_what_tf_serving_checks_before_the_model_still_comes_first(server: Server) -> None:
    nope = f"http://127.0.0.1:{server.port}/v1/models/Nope:predict"
    status, message = _error(requests.post(nope, data=b"{", timeout=SOCKET_WAIT_S))
    assert status == 400 and message.startswith("JSON Parse error: ")
    status, message = _error(requests.post(nope, data=b'{"signature_name": 1}', timeout=SOCKET_WAIT_S))
    assert status == 400 and message.endswith("'signature_name' key must be a string value.")


@pytest.mark.parametrize("path", ["", "/metadata", "/assets/label_map.json"])
def test_versions_beyond_int64_are_400_not_500(server: Server, path: str) -> None:
    for version in ("9223372036854775808", "9" * 5000):  # int64 overflow; past Python's int() digit limit
        response = requests.get(f"{server.model_url}/versions/{version}{path}", timeout=SOCKET_WAIT_S)
        assert _error(response) == (400, f"Failed to convert version: {version} to numeric.")
    response = requests.get(
        f"{server.model_url}/versions/0009223372036854775807{path}", timeout=SOCKET_WAIT_S
    )
    assert response.status_code == 404  # the largest int64, zero-padded: a version, just not there
    response = _post(server, "/versions/" + "9" * 5000 + ":predict", b"{}")
    assert _error(response) == (400, f"Failed to convert version: {'9' * 5000} to numeric.")


def test_model_paths_tf_serving_refuses(server: Server) -> None:
    base = f"http://127.0.0.1:{server.port}/v1/models"
    assert _error(requests.get(base, timeout=SOCKET_WAIT_S)) == (400, "Missing model name in request.")
    for version in ("-1", "1.0", "\u0661"):  # digits only, and ASCII ones
        response = requests.get(f"{server.model_url}/versions/{version}", timeout=SOCKET_WAIT_S)
        status, message = _error(response)
        assert status == 400 and message.startswith(f"Malformed request: GET /v1/models/{MODEL}/versions/")


# --- numbers ----------------------------------------------------------------------------------

# first value of a float instance -> expected error (None: accepted, as TF Serving accepts it)
NUMBERS = {
    "1e400": "JSON Parse error: Number too big to be stored in double.",  # Python reads it as inf
    "-1e400": "JSON Parse error: Number too big to be stored in double.",
    "1" * 5000: "JSON Parse error: Number too big to be stored in double.",  # past Python's int() limit
    # Numbers a float32 cannot hold exactly are rounded, as TF Serving rounds them (GetFloat()).
    "16777217": None,
    "-16777216": None,
    "3.5e38": None,  # beyond float32: infinity
    "16777217.0": None,
    "16777215": None,
    "100000000000000000000": None,  # beyond uint64: rapidjson reads it as a double
    "18446744073709551615": None,
    "NaN": None,
    "-Infinity": None,
    "1e-400": None,  # underflows to 0
}


@pytest.mark.parametrize("first", list(NUMBERS), ids=lambda text: text[:24])
def test_numbers_follow_tf_servings_range_rules(server: Server, first: str) -> None:
    response = _post(server, ":predict", _float_body(first))
    expected = NUMBERS[first]
    if expected is None:
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 1
    else:
        status, message = _error(response)
        assert status == 400 and expected in message, message


def test_integers_beyond_int64_among_integers(server: Server) -> None:
    # One uint64 among small integers: numpy cannot hold them together as integers.
    for first in ("18446744073709551615", "-9223372036854775808"):
        body = _float_body(first).replace(b"0.5", b"1")  # an all-integer array
        response = _post(server, ":predict", body)
        assert response.status_code == 200, response.text


# --- strings and bytes ------------------------------------------------------------------------


def test_strings_that_are_not_unicode(server: Server) -> None:
    # A lone surrogate escape: Python's json accepts it, rapidjson (and we) refuse it. Was a 500.
    for escape in ("\\ud800", "\\udc00", "\\ud800\\u0041"):
        body = ('{"signature_name": "serving_bytes", "instances": ["' + escape + '"]}').encode()
        status, message = _error(_post(server, ":predict", body))
        assert status == 400 and message.startswith(
            "JSON Parse error: The surrogate pair in string is invalid."
        )
    # Bytes that are not UTF-8 reach the model as they are, as in TF Serving: not an image.
    body = b'{"signature_name": "serving_bytes", "instances": ["\xff\xfe\x00"]}'.replace(b"\x00", b"A")
    status, message = _error(_post(server, ":predict", body))
    assert status == 400 and "Unknown image file format" in message
    body = b'{"instances": [{"input_\xffimage": 1}]}'
    status, message = _error(_post(server, ":predict", body))
    assert status == 400 and "does not have named input" in message


def test_base64_as_absl_decodes_it(server: Server) -> None:
    png = _png()
    strict = _post(server, ":predict", _bytes_body(base64.b64encode(png).decode()))
    assert strict.status_code == 200, strict.text
    lenient = {
        "MIME lines of 76": base64.encodebytes(png).decode(),
        "no padding": base64.b64encode(png).decode().rstrip("="),
        "CRLF lines, no padding": base64.encodebytes(png).decode().replace("\n", "\r\n").rstrip("=\r\n"),
        "'.' as padding": base64.b64encode(png).decode().replace("=", "."),
    }
    assert base64.b64encode(png).decode().endswith("="), "the cases above need a padded encoding"
    for case, b64 in lenient.items():
        response = _post(server, ":predict", _bytes_body(b64))
        assert response.status_code == 200, (case, response.text)
        assert response.json() == strict.json(), case
    refused = {
        "URL-safe alphabet": base64.urlsafe_b64encode(b"\xfb\xff" * 30).decode(),
        "one pad too many": base64.b64encode(b"ABCD").decode() + "=",
        "data after padding": "QQ==QQ==",
        "one data character left over": "QUJDR",
    }
    for case, b64 in refused.items():
        status, message = _error(_post(server, ":predict", _bytes_body(b64)))
        assert status == 400, case
        element = "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        assert message.startswith(f"{element}Unable to base64 decode"), case
    body = json.dumps({"signature_name": SIGNATURE_BYTES, "inputs": [{"b64": 1}]}).encode()
    status, message = _error(_post(server, ":predict", body))
    assert status == 400 and message.endswith("not formatted correctly for base64 data"), message


def test_gzip_bodies_are_read_as_tf_serving_reads_them(server: Server) -> None:
    body = _bytes_body(base64.b64encode(_png()).decode())
    plain = _post(server, ":predict", body)
    zipped = _post(server, ":predict", gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert zipped.status_code == 200, zipped.text
    assert zipped.json() == plain.json()

    status, message = _error(_post(server, ":predict", body, **{"Content-Encoding": "gzip"}))
    assert status == 400 and message.startswith("JSON Parse error: The document is empty (the body is")
    status, message = _error(
        _post(server, ":predict", gzip.compress(body)[:-20], **{"Content-Encoding": "gzip"})
    )
    assert status == 400 and "cut short" in message
    bomb = gzip.compress(b" " * (64 * LIMIT))  # a few KB that inflate past the limit
    assert len(bomb) < LIMIT
    status, message = _error(_post(server, ":predict", bomb, **{"Content-Encoding": "gzip"}))
    assert status == 413 and "once gunzipped" in message


# --- nesting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [40, 100, 500, 5000])
def test_regular_deep_nesting_is_a_shape_error(server: Server, depth: int) -> None:
    # Was "lists of different lengths" from 65 levels on (numpy's limit on dimensions).
    body = ('{"instances": ' + "[" * depth + "0.5" + "]" * depth + "}").encode()
    status, message = _error(_post(server, ":predict", body))
    assert status == 400, message
    assert message.startswith("input 'input_image' of signature 'serving_default' has shape [1, 1, 1,")
    assert "expected float [-1, 32, 32, 3]" in message


def test_ragged_lists_name_the_level_and_size(server: Server) -> None:
    instance = np.full((SIZE, SIZE, 3), 0.5).tolist()
    ragged = [instance, [*instance[:-1], [*instance[-1][:-1], [0.5]]]]
    status, message = _error(_post(server, ":predict", json.dumps({"instances": ragged}).encode()))
    assert (status, message) == (
        400,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Encountered list at unexpected size: 1 at level: 2 expected size: 3",
    )
    status, message = _error(_post(server, ":predict", json.dumps({"inputs": ragged}).encode()))
    assert (status, message) == (
        400,
        "input 'input_image': Encountered list at unexpected size: 1 at level: 3 expected size: 3",
    )
    strings = {"signature_name": SIGNATURE_BYTES, "inputs": {INPUT_BYTES: [["a", "b"], ["c"]]}}
    status, message = _error(_post(server, ":predict", json.dumps(strings).encode()))
    assert status == 400 and "Encountered list at unexpected size: 1 at level: 1" in message  # was a 500


# --- connections ------------------------------------------------------------------------------


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_WAIT_S)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    received = b""
    with sock:
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_slow_and_silent_connections_are_closed(server: Server) -> None:
    silent = _connect(server)
    half_head = _connect(server)
    half_head.sendall(f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n".encode())
    half_body = _connect(server)
    half_body.sendall(
        f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
        + b'{"instances": ['
    )
    idle = _connect(server)
    idle.sendall(f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    answers = {}
    readers = [
        threading.Thread(target=lambda n=name, s=sock: answers.__setitem__(n, _read_until_closed(s)))
        for name, sock in {
            "silent": silent,
            "half head": half_head,
            "half body": half_body,
            "idle": idle,
        }.items()
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    assert answers["silent"] == b"" and answers["half head"] == b""
    head, _, body = answers["half body"].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
    assert json.loads(body)["error"].startswith(f"the request body did not arrive within {READ_TIMEOUT_S} s")
    assert answers["idle"].startswith(b"HTTP/1.1 200 ")  # answered, then closed once idle (keep-alive)
    assert server.get().status_code == 200


def test_request_heads_over_the_limit_are_refused(server: Server) -> None:
    # h11_max_incomplete_event_size: a head still incomplete past 16 KiB (serve.max_header_kb).
    sock = _connect(server)
    sock.sendall(f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\nX-Big: ".encode() + b"x" * 20_000)
    answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.endswith(b"Invalid HTTP request received.")
    assert server.get().status_code == 200


# --- fuzz ---------------------------------------------------------------------------------------

JUNK = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**64,
    -(2**63) - 1,
    "",
    "x",
    "\u00e9",
    [],
    {},
    {"b64": 5},
    {"b64": "%%"},
]


def _malformed_requests(rng: random.Random, n: int) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """``n`` requests (method, path suffix, body, headers) that are wrong in types, depths,
    sizes or encodings, from a seeded generator: the same list every run."""
    instance = np.full((SIZE, SIZE, 3), 0.5).tolist()
    png_b64 = base64.b64encode(_png()).decode()
    images = [_png(), _encoded("JPEG"), _encoded("GIF"), _encoded("BMP")]

    def damaged_image() -> str:
        data = bytearray(rng.choice(images))
        for _ in range(rng.randint(0, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return base64.b64encode(bytes(data[: rng.randint(0, len(data))])).decode()

    def junk() -> object:
        return rng.choice(JUNK)

    def nested(depth: int, leaf: object, ragged: bool = False) -> object:
        value = leaf
        for level in range(depth):
            value = [value] * (rng.randint(1, 3) if ragged and level % 7 == 0 else 1)
            if ragged and rng.random() < 0.2:
                value = [*value, [leaf]]
        return value

    def with_junk_leaf() -> object:
        copy = json.loads(json.dumps(instance))
        copy[rng.randrange(SIZE)][rng.randrange(SIZE)][rng.randrange(3)] = junk()
        return copy

    documents = [
        lambda: junk(),
        lambda: {"instances": junk()},
        lambda: {"inputs": junk()},
        lambda: {"signature_name": junk(), "instances": [instance]},
        lambda: {"signature_name": rng.choice(["", "nope", SIGNATURE_BYTES]), "instances": [junk()]},
        lambda: {"instances": [with_junk_leaf()]},
        lambda: {"inputs": {"input_image": [with_junk_leaf()], rng.choice(["x", "input_image"]): junk()}},
        lambda: {"instances": [{"input_image": instance, "extra": junk()}]},
        lambda: {"instances": nested(rng.randint(1, 300), rng.choice([0.5, "s", None, {"b64": png_b64}]))},
        lambda: {"instances": nested(rng.randint(2, 60), 0.5, ragged=True)},
        lambda: {"instances": [np.full((rng.randint(0, 40),) * 3, 0.5).tolist()]},
        lambda: {"instances": [instance] * rng.randint(0, 3) + [junk()]},
        lambda: {
            "signature_name": SIGNATURE_BYTES,
            "instances": [{"b64": rng.choice([png_b64[:-3], "=" * 5])}],
        },
        lambda: {"signature_name": SIGNATURE_BYTES, "instances": [[{"b64": png_b64}], {"b64": png_b64}]},
        lambda: {"signature_name": SIGNATURE_BYTES, "instances": [{"b64": damaged_image()}]},
        lambda: {"signature_name": SIGNATURE_BYTES, "inputs": {INPUT_BYTES: nested(rng.randint(1, 5), "x")}},
    ]
    requests_: list[tuple[str, str, bytes, dict[str, str]]] = []
    for _ in range(n):
        headers = {"Content-Type": "application/json"}
        body = json.dumps(rng.choice(documents)()).encode()
        mangle = rng.random()
        if mangle < 0.1:
            body = body[: rng.randrange(len(body) + 1)]  # truncated
        elif mangle < 0.2:
            body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))  # random bytes
        elif mangle < 0.25:
            body = body.decode().encode("utf-16")  # another encoding
        elif mangle < 0.3:
            position = rng.randrange(len(body) + 1)
            body = (
                body[:position]
                + rng.choice([b"\xff", b"\xc3", b"\\ud800", b"\xed\xa0\x80"])
                + body[position:]
            )
        elif mangle < 0.35:
            headers["Content-Encoding"] = "gzip"
            body = rng.choice([gzip.compress(body), gzip.compress(body)[:-10], body])
        elif mangle < 0.38:
            body = b'{"instances": [' + b"0.5," * (LIMIT // 4) + b"0.5]}"  # over the body limit
        elif mangle < 0.42:
            body = b"[" * rng.randint(1, 5000) + b"]" * rng.randint(0, 5000)
        path = ":predict"
        if rng.random() < 0.1:
            path = rng.choice(
                [
                    "/versions/" + "9" * rng.randint(18, 400) + ":predict",
                    "/versions/0:predict",
                    "/versions/1:predict",
                ]
            )
        requests_.append(("POST", path, body, headers))
    return requests_


def test_fuzz_no_5xx_and_flat_memory(server: Server) -> None:
    batch = _malformed_requests(random.Random(8), 300)
    process = psutil.Process(server.proc.pid)
    statuses: dict[int, int] = {}

    def send_all() -> None:
        with requests.Session() as session:
            for method, path, body, headers in batch:
                response = session.request(
                    method, server.model_url + path, data=body, headers=headers, timeout=SOCKET_WAIT_S
                )
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                assert response.status_code < 500, (path, body[:300], response.text[:500])
                if response.status_code != 200:
                    _error(response)

    send_all()  # the first round warms up what a process keeps (TF's kernels, allocator pools)
    rss_before = process.memory_info().rss
    send_all()
    send_all()
    growth_mib = (process.memory_info().rss - rss_before) / 2**20
    assert set(statuses) - {200} and set(statuses) <= {200, 400, 404, 413}, statuses
    assert growth_mib < 64, f"server RSS grew {growth_mib:.0f} MiB over 600 more bad requests"
    assert "Traceback" not in server.log.read_text()


# --- command lines ------------------------------------------------------------------------------


def _amazonia(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "amazonia"), *args], capture_output=True, text=True, timeout=SOCKET_WAIT_S * 2
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["serve", "--port", "99999"], "argument --port: 99999 is not a port: ports are 1 to 65535"),
        (["serve", "--port", "0"], "argument --port: 0 is not a port: ports are 1 to 65535"),
        (["serve", "--port", "http"], "argument --port: 'http' is not a port number"),
        (["serve", "--max-connections", "abc"], "argument --max-connections: 'abc' is not a whole number"),
        (["serve", "--max-connections", "0"], "argument --max-connections: 0 must be > 0"),
        (["serve", "--keep-alive", "soon"], "argument --keep-alive: 'soon' is not a number"),
        (["serve", "--poll-seconds", "inf"], "argument --poll-seconds: inf must be a finite number > 0"),
        (["serve", "--max-body-mb", "nan"], "argument --max-body-mb: nan must be a finite number > 0"),
        (["serve", "--read-timeout", "1e300"], "argument --read-timeout: 1e300 is more than a day (86400 s)"),
        (["predict", "a.jpg", "--timeout", "inf"], "argument --timeout: inf must be a finite number > 0"),
        (
            ["predict", "a.jpg", "--timeout", "1e300"],
            "argument --timeout: 1e300 is more than a day (86400 s)",
        ),
    ],
)
def test_impossible_numbers_on_the_command_line_are_usage_errors(args: list[str], message: str) -> None:
    result = _amazonia(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"amazonia {args[0]}: error: {message}", result.stderr


def test_a_port_in_use_is_one_line_before_tensorflow_loads(base_path: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = (
            "import sys\n"
            "from amazonia.cli import main\n"
            f"status = main(['serve', '--port', '{port}', '--model-base-path', {str(base_path)!r}])\n"
            "print(status, 'tensorflow' in sys.modules)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=SOCKET_WAIT_S
        )
    assert result.stdout.split() == ["1", "False"], result.stdout + result.stderr
    assert result.stderr == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; is another server there? "
        "Stop it, or pass --port (or --host)\n"
    )


def test_predict_prints_nothing_on_stderr_and_loads_no_tensorflow(server: Server, tmp_path: Path) -> None:
    image = tmp_path / "chip.png"
    image.write_bytes(_png(40))
    result = _amazonia("predict", str(image), "--url", server.model_url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no TensorFlow start-up lines: it is never imported
    assert result.stdout.startswith(f"{image}: ")
    code = (
        "from amazonia.cli import main\n"
        f"assert main(['predict', {str(image)!r}, '--url', {server.model_url!r}]) == 0"
    )
    assert heavy_imports_after(code, tmp_path) == []
