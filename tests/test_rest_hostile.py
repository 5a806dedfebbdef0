"""``amazonia serve`` under hostile and unlucky input: TF Serving's REST protocol exactly
(check order, number ranges, gzip, lenient base64, no redirects), HTTP framing and
connection limits, per-request budgets, and a fuzz run; ``amazonia serve``/``predict``
command lines that end in one-line errors. The shared server process on 127.0.0.1
(tests/conftest.py), spoken to with requests and raw sockets."""

from __future__ import annotations

import base64
import errno
import gzip
import io
import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from amazonia.cli import main
from amazonia.data.records.images import BadImageError, check_image
from amazonia.export.contract import INPUT_BYTES, SIGNATURE_BYTES
from amazonia.serving.protocol import LINGER_MAX_BYTES
from tests.conftest import MODEL, SERVER_PARAMS, SIZE, Exported, Server
from tests.test_serving import heavy_imports_after

BIN = Path(sys.executable).parent
LIMIT = int(SERVER_PARAMS["max_body_mb"] * 2**20)
READ_TIMEOUT_S = SERVER_PARAMS["read_timeout_seconds"]
SOCKET_WAIT_S = 60  # a generous bound on any wait for the server: a failure, not a measurement


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
    for version, shown in (
        ("9223372036854775808", "9223372036854775808"),  # int64 overflow
        ("9" * 5000, "9" * 200 + "...(truncated)"),  # past Python's int() digit limit; quoted in part
    ):
        response = requests.get(f"{server.model_url}/versions/{version}{path}", timeout=SOCKET_WAIT_S)
        assert _error(response) == (400, f"Failed to convert version: {shown} to numeric.")
    response = requests.get(
        f"{server.model_url}/versions/0009223372036854775807{path}", timeout=SOCKET_WAIT_S
    )
    assert response.status_code == 404  # the largest int64, zero-padded: a version, just not there
    response = _post(server, "/versions/" + "9" * 5000 + ":predict", b"{}")
    assert _error(response) == (400, f"Failed to convert version: {'9' * 200}...(truncated) to numeric.")


def test_model_paths_tf_serving_refuses(server: Server) -> None:
    base = f"http://127.0.0.1:{server.port}/v1/models"
    assert _error(requests.get(base, timeout=SOCKET_WAIT_S)) == (400, "Missing model name in request.")
    for version in ("-1", "1.0", "\u0661"):  # digits only, and ASCII ones
        response = requests.get(f"{server.model_url}/versions/{version}", timeout=SOCKET_WAIT_S)
        status, message = _error(response)
        assert status == 400 and message.startswith(f"Malformed request: GET /v1/models/{MODEL}/versions/")


@pytest.mark.parametrize(
    "method, path, status, message",
    [
        ("GET", f"/v1/models/{MODEL}/", 400, f"Malformed request: GET /v1/models/{MODEL}/"),
        ("GET", f"/v1/models/{MODEL}/metadata/", 400, f"Malformed request: GET /v1/models/{MODEL}/metadata/"),
        (
            "GET",
            f"/v1/models/{MODEL}/versions/1/",
            400,
            f"Malformed request: GET /v1/models/{MODEL}/versions/1/",
        ),
        ("POST", f"/v1/models/{MODEL}:predict/", 400, f"Malformed request: POST /v1/models/{MODEL}:predict/"),
        ("GET", "/v1/models/", 400, "Malformed request: GET /v1/models/"),
        ("GET", "/nothing/here/", 404, "Not Found"),
    ],
)
def test_no_path_is_redirected(server: Server, method: str, path: str, status: int, message: str) -> None:
    # Starlette redirected a trailing slash to a Location built from the Host header (an
    # open redirect); TF Serving's path regexes match no trailing slash: its error, as for
    # any path it does not know.
    response = requests.request(
        method,
        f"http://127.0.0.1:{server.port}{path}",
        headers={"Host": "evil.example"},
        allow_redirects=False,
        timeout=SOCKET_WAIT_S,
    )
    assert "location" not in response.headers
    assert _error(response) == (status, message)


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
    assert status == 400 and "Encountered list at unexpected size: 1 at level: 1" in message


# --- connections ------------------------------------------------------------------------------


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_WAIT_S)
    return sock


def _read_to_the_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it ends its side (fails if it never does)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it ends its side; the socket is closed then."""
    with sock:
        return _read_to_the_end(sock)


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


def _answers_then_close(sock: socket.socket) -> list[tuple[int, bytes]]:
    """(status, body) of every answer the server sends until it closes the connection."""
    return _answers(_read_until_closed(sock))


def _answers(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of every answer in ``data``."""
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:")
        )
        answers.append((int(lines[0].split()[1]), rest[:length]))
        data = rest[length:]
    return answers


def _reset_unread(sock: socket.socket) -> int:
    """Wait, reading nothing, until the server drops the connection; the error it left
    (ECONNRESET), or 0 if it did not within SOCKET_WAIT_S."""
    deadline = time.monotonic() + SOCKET_WAIT_S
    while time.monotonic() < deadline:
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            return error
        time.sleep(0.05)
    return 0


def _refusal(sock: socket.socket) -> tuple[int, str]:
    """The one answer before the server closed the connection: status and JSON error."""
    answers = _answers_then_close(sock)
    assert len(answers) == 1, answers
    status, body = answers[0]
    return status, json.loads(body)["error"]


HEAD_LIMIT = 16 * 1024  # serve.max_header_kb's default, the shared server's
HEAD_TOO_LARGE_END = (
    f"larger than this server's limit of {HEAD_LIMIT:,} bytes (serve.max_header_kb); "
    "send fewer or shorter headers"
)
# A refusal closes the connection while its client may still be sending: closed with bytes
# unread, the kernel answers them with a reset, which can destroy the refusal before the
# client reads it ("connection reset by peer"), more often the more is left unread and the
# busier the machine. Tests of it send each request this many times.
REFUSALS_IN_A_ROW = 20


@pytest.mark.parametrize(
    "headers",
    [
        [f"X-Big: {'x' * 20_000}"],  # one long header
        [f"X-H{i}: {'v' * 3}" for i in range(3_000)],  # 27 KB of short ones, complete in one read
        [f"X-H{i}: {'v' * 8}" for i in range(5_000)],  # 95 KB
        [f"X-H{i}: {'v' * 50}" for i in range(16_000)],  # 1 MB: more than the server reads at once
    ],
    ids=["long header", "3000 headers", "5000 headers", "1 MB of headers"],
)
def test_request_heads_over_the_limit_are_refused(server: Server, headers: list[str]) -> None:
    # h11's max_incomplete_event_size measures a head only while it is incomplete: sent
    # at once, heads of any size were answered 200.
    head = f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    for _ in range(REFUSALS_IN_A_ROW):  # the refusal, whole, then the end of the connection: never a reset
        sock = _connect(server)
        sock.sendall(head.encode() + f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, message = _refusal(sock)
        assert status == 431
        assert message.startswith("Request line and headers ") and message.endswith(HEAD_TOO_LARGE_END)
    assert server.get().status_code == 200


BODY_PAST_A_REFUSAL = 4 * 2**20  # far more than the server reads at once (256 KiB)
# More than the kernel holds of a connection's bytes sent and not read (its buffers: Linux's
# tcp_rmem and tcp_wmem maxima are 6 and 4 MiB by default, up to 32 MiB received elsewhere).
SOCKET_BUFFERS_BOUND = 64 * 2**20


@pytest.mark.parametrize(
    "refusal", ["Content-Length and Transfer-Encoding", "HTTP/2.0", "body over the limit, past what is read"]
)
def test_a_client_sending_far_past_a_refusal_reads_it_whole(server: Server, refusal: str) -> None:
    from amazonia.serving.server import MIN_DRAIN_BYTES  # TensorFlow, which the server fixture loaded

    predict = f"POST /v1/models/{MODEL}:predict HTTP"
    body = b"x" * BODY_PAST_A_REFUSAL
    if refusal == "Content-Length and Transfer-Encoding":
        head = f"{predict}/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n"
        expected = 400, "Invalid HTTP request: Content-Length and Transfer-Encoding both given"
    elif refusal == "HTTP/2.0":
        head = f"{predict}/2.0\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        expected = 505, "HTTP/2.0 is not supported"
    else:
        # The app reads a body over the limit up to MIN_DRAIN_BYTES (the shared server's limit
        # being small) before it answers 413: this one goes on past that.
        body = b"x" * (MIN_DRAIN_BYTES + LINGER_MAX_BYTES // 2)
        head = f"{predict}/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        expected = (
            413,
            f"Request body of {len(body)} bytes is larger than this server's limit of {LIMIT} bytes",
        )
    request = head.encode() + b"\r\n" + body
    for _ in range(REFUSALS_IN_A_ROW):
        sock = _connect(server)
        sock.sendall(request)
        status, message = _refusal(sock)
        assert (status, message[: len(expected[1])]) == expected
    assert server.get().status_code == 200


@pytest.mark.parametrize(
    "refused, pause_s",
    [("head over the limit", 0), ("body too slow", 0.05)],
    ids=["fast, past the byte bound", "slow, past the time bound"],
)
def test_a_client_that_sends_on_after_its_refusal_is_cut_off(
    server: Server, refused: str, pause_s: float
) -> None:
    # The server reads and discards what comes after a refusal, so that the client can read
    # it; a client that sends on for good loses the connection (a reset on its next send).
    sock = _connect(server)
    if refused == "head over the limit":
        sock.sendall(f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\nX-Big: {'x' * 2 * HEAD_LIMIT}".encode())
        chunk, expected = b"x" * 65536, 431
    else:  # within the limit, and nothing of it within serve.read_timeout_seconds
        head = f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT}\r\n\r\n"
        sock.sendall(head.encode())
        chunk, expected = b"x" * 4096, 408
    sent = 0
    with sock:
        assert [status for status, _ in _answers(_read_to_the_end(sock))] == [expected]
        deadline = time.monotonic() + SOCKET_WAIT_S
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            while time.monotonic() < deadline:
                sock.sendall(chunk)
                sent += len(chunk)
                time.sleep(pause_s)
    assert sent < LINGER_MAX_BYTES + SOCKET_BUFFERS_BOUND
    assert server.get().status_code == 200


def test_a_head_within_the_limit_is_served(server: Server) -> None:
    sock = _connect(server)
    headers = "".join(f"X-H{i}: {'v' * 40}\r\n" for i in range(200))  # 10 KB
    sock.sendall(f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode())
    assert [status for status, _ in _answers_then_close(sock)] == [200]


NEXT_REQUEST = f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "request_, message",
    [
        (
            f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "Invalid HTTP request: Content-Length and Transfer-Encoding both given, which RFC 9112 section "
            "6.3 asks servers to refuse (request smuggling); send one of them. The connection is closed",
        ),
        (
            f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            "Content-Length: 3\r\n\r\n{}",
            "Invalid HTTP request: conflicting Content-Length headers; the connection is closed",
        ),
        (
            f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            "zz\r\n{}\r\n0\r\n\r\n",
            "Invalid HTTP request: illegal chunk header: bytearray(b'zz\\r\\n'); the connection is closed",
        ),
    ],
    ids=["Content-Length and Transfer-Encoding", "two Content-Lengths", "bad chunk size"],
)
def test_framing_errors_are_400_and_close_the_connection(server: Server, request_: str, message: str) -> None:
    # RFC 9112 section 6.3: after a framing error the rest of the stream cannot be trusted;
    # the pipelined request behind it is not answered.
    sock = _connect(server)
    sock.sendall((request_ + NEXT_REQUEST).encode())
    assert _refusal(sock) == (400, message)


@pytest.mark.parametrize("version", ["1.2", "2.0", "0.9", "3.1"])
def test_http_versions_other_than_1_0_and_1_1_are_refused(server: Server, version: str) -> None:
    sock = _connect(server)
    sock.sendall(f"GET /v1/models/{MODEL} HTTP/{version}\r\nHost: x\r\n\r\n".encode() + NEXT_REQUEST.encode())
    assert _refusal(sock) == (505, f"HTTP/{version} is not supported: send HTTP/1.1 (or HTTP/1.0)")
    http10 = _connect(server)
    http10.sendall(f"GET /v1/models/{MODEL} HTTP/1.0\r\n\r\n".encode())
    assert [status for status, _ in _answers_then_close(http10)] == [200]


def test_error_messages_quote_only_the_start_of_what_was_sent(server: Server) -> None:
    long = "n" * 300_000
    quoted = "n" * 200 + "...(truncated)"
    body = json.dumps({"signature_name": long, "instances": [1]}).encode()
    assert _error(_post(server, ":predict", body)) == (
        400,
        f'Serving signature name: "{quoted}" not found in signature def',
    )
    named = json.dumps({"instances": [{long: 1}]}).encode()
    status, message = _error(_post(server, ":predict", named))
    assert status == 400 and message == (
        f"Failed to process element: 0 key: {quoted} of 'instances' list. "
        f"Error: INVALID_ARGUMENT: JSON object: does not have named input: {quoted}"
    )
    path = "p" * 10_000
    response = requests.get(f"{server.model_url}/{path}", timeout=SOCKET_WAIT_S)
    assert _error(response) == (
        400,
        f"Malformed request: GET {f'/v1/models/{MODEL}/{path}'[:200]}...(truncated)",
    )
    response = requests.get(
        f"http://127.0.0.1:{server.port}/v1/models/{long[:10_000]}", timeout=SOCKET_WAIT_S
    )
    assert _error(response) == (404, f"Could not find any versions of model {quoted}")


def test_a_client_that_does_not_read_its_answers_is_dropped_past_the_unsent_cap(server: Server) -> None:
    # Pipelined requests whose answers the client never reads: without a cap they wait in
    # the server (its buffer, the kernel's), the connection and its slot held.
    metadata_request = f"GET /v1/models/{MODEL}/metadata HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    answer_bytes = len(server.get("/metadata").content)
    requests_sent = 4 * SERVER_PARAMS["max_unsent_kb"] * 1024 // answer_bytes
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that takes nothing more
    sock.settimeout(SOCKET_WAIT_S)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(metadata_request * requests_sent)
    assert _reset_unread(sock) == errno.ECONNRESET
    assert server.get().status_code == 200


@pytest.mark.parametrize("path", ["", "/metadata", "/nope"], ids=["status", "metadata", "unknown path"])
def test_a_body_that_comes_after_its_answer_does_not_hold_the_connection(server: Server, path: str) -> None:
    # Routes that read no body answer at once; uvicorn then waited for the body with no
    # timeout (each byte cancels keep-alive's) and armed none once it was in: 64 such
    # connections (serve.max_connections) answered every other client 503 for good.
    head = f"GET /v1/models/{MODEL}{path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n".encode()
    complete, dribbled = _connect(server), _connect(server)
    for sock in (complete, dribbled):
        sock.sendall(head)
        assert sock.recv(12).startswith(b"HTTP/1.1 ")
    complete.sendall(b"{}" + f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    dribbled.sendall(b"{")  # and never the last byte: closed after serve.read_timeout_seconds
    # Both timeouts run at once. The complete one is kept alive for the next request, then
    # closed once idle (either read fails with a socket timeout if its connection is never).
    assert b"HTTP/1.1 200 " in _read_until_closed(complete)
    _read_until_closed(dribbled)
    assert json.loads(server.get().content)["model_version_status"][0]["state"] == "AVAILABLE"


# --- budgets --------------------------------------------------------------------------------


def _png_b64(size: int, mode: str = "1") -> dict[str, str]:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), 0).save(buffer, format="PNG")
    return {"b64": base64.b64encode(buffer.getvalue()).decode("ascii")}


def test_a_request_over_the_instance_cap_is_400(server: Server) -> None:
    cap = SERVER_PARAMS["max_instances"]
    body = json.dumps({"signature_name": SIGNATURE_BYTES, "instances": [_png_b64(8)] * (cap + 1)}).encode()
    assert _error(_post(server, ":predict", body)) == (
        400,
        f"Task size {cap + 1} is larger than maximum input batch size {cap} (serve.max_instances); "
        "send the instances in several requests",
    )


def test_a_request_over_the_pixel_budget_is_400_before_anything_is_decoded(server: Server) -> None:
    # Each image is within the per-image budget (4096 x 4096); three are past the request's.
    images = [_png_b64(4096)] * 3
    body = json.dumps({"signature_name": SIGNATURE_BYTES, "instances": images}).encode()
    assert len(body) < LIMIT
    total, budget = 3 * 4096 * 4096, SERVER_PARAMS["max_request_pixels"]
    assert _error(_post(server, ":predict", body)) == (
        400,
        f"the images of this request decode to {total:,} pixels, more than this server's limit of {budget:,} "
        "per request (serve.max_request_pixels); send fewer or smaller images per request",
    )


# --- images ---------------------------------------------------------------------------------

WEBP_FLAGS_AT = 20  # the VP8X chunk's flags byte
WEBP_ALPHA = 0x10
ANIMATED_WITHOUT_ALPHA = "an animated WebP without alpha: TensorFlow's decoder crashes on it"


def _animated_webp(alpha: bool) -> bytes:
    """A 3-frame animated WebP whose VP8X header does or does not flag alpha (PIL flags
    it only for RGBA frames with transparency; other encoders never do)."""
    frames = [Image.new("RGB", (16, 16), (40 * i, 90, 20)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"VP8X"
    data[WEBP_FLAGS_AT] = data[WEBP_FLAGS_AT] | WEBP_ALPHA if alpha else data[WEBP_FLAGS_AT] & ~WEBP_ALPHA
    return bytes(data)


def test_an_animated_webp_without_alpha_is_400_not_a_crashed_server(server: Server) -> None:
    # TensorFlow's decode_image(channels=0) corrupts its heap on these ("free(): corrupted
    # unsorted chunks"): one such request would abort the process if it reached TensorFlow.
    opaque = base64.b64encode(_animated_webp(alpha=False)).decode()
    status, message = _error(_post(server, ":predict", _bytes_body(opaque)))
    assert status == 400 and message.startswith(f"input 'image_bytes': {ANIMATED_WITHOUT_ALPHA}")
    with_alpha = base64.b64encode(_animated_webp(alpha=True)).decode()
    assert _post(server, ":predict", _bytes_body(with_alpha)).status_code == 200
    assert server.proc.poll() is None


def test_serialize_refuses_the_animated_webp_serving_refuses() -> None:
    # serialize runs the server's check: the served model could not read such a chip.
    with pytest.raises(BadImageError, match=f"^{ANIMATED_WITHOUT_ALPHA}"):
        check_image(_animated_webp(alpha=False))
    assert check_image(_animated_webp(alpha=True)) == "WebP"


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
        (
            ["serve", "--port", "99999"],
            "argument --port: serve.port: must be at least 1 and at most 65535 (got 99999)",
        ),
        (
            ["serve", "--port", "0"],
            "argument --port: serve.port: must be at least 1 and at most 65535 (got 0)",
        ),
        (["serve", "--port", "http"], "argument --port: 'http' is not a whole number (serve.port)"),
        (
            ["serve", "--max-connections", "abc"],
            "argument --max-connections: 'abc' is not a whole number (serve.max_connections)",
        ),
        (
            ["serve", "--max-connections", "0"],
            "argument --max-connections: serve.max_connections: must be at least 1 and at most 65535 (got 0)",
        ),
        (
            ["serve", "--keep-alive", "soon"],
            "argument --keep-alive: 'soon' is not a number (serve.keep_alive_seconds)",
        ),
        (
            ["serve", "--poll-seconds", "inf"],
            "argument --poll-seconds: serve.poll_seconds: must be a finite number (got inf)",
        ),
        (
            ["serve", "--max-body-mb", "nan"],
            "argument --max-body-mb: serve.max_body_mb: must be a finite number (got nan)",
        ),
        (
            ["serve", "--max-body-mb", "1e15"],
            "argument --max-body-mb: serve.max_body_mb: must be at least 0.01 and at most 1024 (got 1e+15)",
        ),
        (
            ["serve", "--max-body-mb", "1e-9"],
            "argument --max-body-mb: serve.max_body_mb: must be at least 0.01 and at most 1024 (got 1e-09)",
        ),
        (
            ["serve", "--read-timeout", "1e300"],
            "argument --read-timeout: serve.read_timeout_seconds: must be at least 0.01 and at most 86400 "
            "(got 1e+300)",
        ),
        (
            ["serve", "--host", "a..b"],
            "argument --host: serve.host: neither an IP address nor a host name (letters, digits, '-' and "
            "'.'); use 0.0.0.0 to listen on every interface (got 'a..b')",
        ),
        (["predict", "a.jpg", "--timeout", "inf"], "argument --timeout: inf must be a finite number > 0"),
        (
            ["predict", "a.jpg", "--timeout", "1e300"],
            "argument --timeout: 1e300 is more than a day (86400 s)",
        ),
    ],
)
def test_impossible_values_on_the_command_line_are_usage_errors_naming_flag_key_and_bounds(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process: an argparse usage error, before anything runs (a real process: test_serve_params).
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.splitlines()[-1] == f"amazonia {args[0]}: error: {message}", stderr


def test_a_port_in_use_is_one_line_before_tensorflow_loads(exported: Exported, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = str(exported.base_path)
        code = (
            "import sys\n"
            "from amazonia.cli import main\n"
            f"status = main(['serve', '--port', '{port}', '--model-base-path', {base!r}])\n"
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
