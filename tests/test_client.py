"""``amazonia predict`` against answers no good server gives, and paths that are no image files.

A stub HTTP server on 127.0.0.1 answers as the scenario named in the URL's model name says
(a malformed label map, thresholds or predictions, NaN scores, non-JSON, a trickle), and the
command must stop with exit status 1 and a one-line error naming what was wrong. The stub
also checks what it is sent: every file's bytes, whole, through ``serving_bytes``. Answers of
the real ``amazonia serve`` are in tests/test_serving.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import resource
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from amazonia.cli import main
from amazonia.client.transport import MAX_ANSWER_BYTES
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from amazonia.export.contract import INPUT_BYTES, SIGNATURE_BYTES
from tests.conftest import tool_env

BIN = Path(sys.executable).parent
TRICKLE_PAUSE_S = (
    0.2  # between the bytes of a trickled answer: far below --timeout, as a read timeout sees it
)
TRICKLE_TIMEOUT_S = 1  # --timeout against a trickle that takes ~40 s in all

GOOD_PREDICTION = {"weather": [0.7, 0.1, 0.1, 0.1], "ground": [0.6] * len(LABELS_GROUND)}
GOOD = {
    "metadata": {"model_spec": {"name": "x", "signature_name": "", "version": "1"}, "metadata": {}},
    "label_map.json": {"weather": list(LABELS_WEATHER), "ground": list(LABELS_GROUND)},
    "thresholds.json": {"ground": dict.fromkeys(LABELS_GROUND, 0.5)},
}


@dataclass(frozen=True)
class Reply:
    """A raw answer: status, body, and whether it trickles (``all`` of it, or its ``body``)."""

    body: bytes
    status: int = 200
    trickle: str = ""
    declared_length: int | None = None  # a Content-Length other than the body's
    before_the_body: bool = False  # answered (and the connection closed) without reading the request body


def predicting(**heads: Any) -> Callable[[list[bytes]], Any]:
    """A predict answer whose predictions have ``heads`` replaced."""
    return lambda images: {"predictions": [{**GOOD_PREDICTION, **heads}] * len(images)}


def metadata(version: Any) -> dict:
    return {"model_spec": {"name": "x", "version": version}}


# scenario -> {what: answer}; what is metadata, label_map.json, thresholds.json or predict; an
# answer is a JSON value, a function of the images sent, or a Reply.
SCENARIOS: dict[str, dict[str, Any]] = {
    "good": {},
    "label-map-empty": {"label_map.json": {}},
    "label-map-list": {"label_map.json": [list(LABELS_WEATHER), list(LABELS_GROUND)]},
    "label-map-strings": {"label_map.json": {"weather": " ".join(LABELS_WEATHER), "ground": "primary"}},
    "label-map-empty-lists": {"label_map.json": {"weather": [], "ground": []}},
    "label-map-numbers": {"label_map.json": {"weather": [0, 1, 2, 3], "ground": list(LABELS_GROUND)}},
    "label-map-repeated": {"label_map.json": {"weather": ["clear"] * 4, "ground": list(LABELS_GROUND)}},
    "thresholds-list": {"thresholds.json": [0.5] * len(LABELS_GROUND)},
    "thresholds-empty": {"thresholds.json": {}},
    "thresholds-ground-list": {"thresholds.json": {"ground": [0.5] * len(LABELS_GROUND)}},
    "thresholds-strings": {"thresholds.json": {"ground": dict.fromkeys(LABELS_GROUND, "high")}},
    "thresholds-missing": {"thresholds.json": {"ground": dict.fromkeys(LABELS_GROUND[:-1], 0.5)}},
    "thresholds-nan": {"thresholds.json": {"ground": dict.fromkeys(LABELS_GROUND, math.nan)}},
    "thresholds-above-one": {"thresholds.json": {"ground": dict.fromkeys(LABELS_GROUND, 1.5)}},
    "thresholds-bool": {"thresholds.json": {"ground": dict.fromkeys(LABELS_GROUND, True)}},
    "metadata-no-version": {"metadata": {"model_spec": {"name": "x"}}},
    "metadata-version-bool": {"metadata": metadata(True)},
    "metadata-version-negative": {"metadata": metadata("-1")},
    "metadata-html": {"metadata": Reply(b"<html><body>It works!</body></html>")},
    "metadata-too-deep": {"metadata": Reply(b"[" * 100_000 + b"]" * 100_000)},
    "predictions-missing": {"predict": {"outputs": {"weather": [], "ground": []}}},
    "predictions-columnar": {"predict": {"predictions": GOOD_PREDICTION}},
    "predictions-too-few": {"predict": lambda images: {"predictions": [GOOD_PREDICTION] * (len(images) - 1)}},
    "prediction-not-object": {
        "predict": lambda images: {"predictions": [[0.7, 0.1, 0.1, 0.1]] * len(images)}
    },
    "prediction-head-missing": {
        "predict": lambda images: {"predictions": [{"weather": [0.7, 0.1, 0.1, 0.1]}] * len(images)}
    },
    "prediction-head-string": {"predict": predicting(weather="0.7 0.1 0.1 0.1")},
    "prediction-short": {"predict": predicting(weather=[0.7, 0.2, 0.1])},
    "prediction-nested": {"predict": predicting(weather=[[0.7], [0.1], [0.1], [0.1]])},
    "prediction-string-scores": {"predict": predicting(weather=["0.7", "0.1", "0.1", "0.1"])},
    "prediction-nan": {"predict": predicting(weather=[math.nan, 0.1, 0.1, 0.1])},
    "prediction-infinity": {"predict": predicting(ground=[math.inf] * len(LABELS_GROUND))},
    "prediction-minus-infinity": {"predict": predicting(ground=[-math.inf] * len(LABELS_GROUND))},
    "prediction-above-one": {"predict": predicting(weather=[1.7, 0.1, 0.1, 0.1])},
    "predict-not-json": {"predict": Reply(b"predictions: clear")},
    "predict-cut-short": {"predict": Reply(b'{"predictions": [', declared_length=1000)},
    "predict-huge": {
        "predict": lambda images: Reply(
            json.dumps({"predictions": [GOOD_PREDICTION] * len(images)}).encode() + b" " * MAX_ANSWER_BYTES
        )
    },
    "predict-refused-early": {
        "predict": Reply(b'{"error": "too large for this stub"}', status=413, before_the_body=True)
    },
    "predict-refuses-bad": {  # as a server refuses a batch holding an image it cannot decode
        "predict": lambda images: (
            Reply(b'{"error": "cannot decode the image"}', status=400)
            if b"bad" in images
            else {"predictions": [GOOD_PREDICTION] * len(images)}
        )
    },
    "trickle-all": {"metadata": Reply(json.dumps(GOOD["metadata"]).encode(), trickle="all")},
    "trickle-body": {
        "predict": lambda images: Reply(
            json.dumps({"predictions": [GOOD_PREDICTION] * len(images)}).encode(), trickle="body"
        )
    },
}


# --- the stub server ------------------------------------------------------------------------


@dataclass
class Stub:
    port: int
    scheme: str = "http"
    certificate: Path | None = None  # the self-signed certificate of an https stub
    received: list[list[bytes]] = field(default_factory=list)  # images of each predict request

    def url(self, scenario: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/v1/models/{scenario}"


ROUTE = re.compile(r"/v1/models/([\w-]+)(?:/versions/(-?\d+))?(/metadata|/assets/[\w.]+|:predict)?")


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._answer(None)

        def do_POST(self) -> None:
            route = ROUTE.fullmatch(self.path)
            early = SCENARIOS.get(route[1] if route else "", {}).get("predict")
            if isinstance(early, Reply) and early.before_the_body:
                return self._send(early)
            self._answer(self.rfile.read(int(self.headers["Content-Length"])))

        def _answer(self, body: bytes | None) -> None:
            route = ROUTE.fullmatch(self.path)
            if route is None or route[1] not in SCENARIOS:
                return self._send(Reply(b'{"error": "no such route"}', status=404))
            scenario, suffix = SCENARIOS[route[1]], route[3] or ""
            what = "predict" if suffix == ":predict" else suffix.rpartition("/")[2]
            if what == "predict":
                images = _images(body or b"")
                stub.received.append(images)
                answer = scenario.get(
                    "predict", lambda images: {"predictions": [GOOD_PREDICTION] * len(images)}
                )
                answer = answer(images) if callable(answer) else answer
            else:
                answer = scenario.get(what, GOOD.get(what))
            if answer is None:
                answer = Reply(b'{"error": "no such asset"}', status=404)
            self._send(answer if isinstance(answer, Reply) else Reply(json.dumps(answer).encode()))

        def _send(self, reply: Reply) -> None:
            length = len(reply.body) if reply.declared_length is None else reply.declared_length
            head = (
                f"HTTP/1.1 {reply.status} Stub\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
            ).encode()
            self.close_connection = True
            stream = head + reply.body
            # A trickle goes a byte at a time: all of it, or the head at once and then the body.
            at_once = 0 if reply.trickle == "all" else len(head) if reply.trickle == "body" else len(stream)
            try:
                self.wfile.write(stream[:at_once])
                for i in range(at_once, len(stream)):
                    self.wfile.write(stream[i : i + 1])
                    time.sleep(TRICKLE_PAUSE_S)
            except OSError:  # the client gave up (a reset, a broken pipe, a TLS EOF), as it should:
                pass  # no traceback on the stderr of whichever test runs meanwhile

    return Handler


def _images(body: bytes) -> list[bytes]:
    """The images of a ``serving_bytes`` request as the model would get them; an assertion
    error (a 500 to the client) for anything else."""
    request = json.loads(body)
    assert request["signature_name"] == SIGNATURE_BYTES and set(request) == {"signature_name", "instances"}
    images = []
    for instance in request["instances"]:
        assert set(instance) == {INPUT_BYTES} and set(instance[INPUT_BYTES]) == {"b64"}
        try:
            images.append(base64.b64decode(instance[INPUT_BYTES]["b64"], validate=True))
        except binascii.Error as err:
            raise AssertionError(err) from None
    return images


@pytest.fixture(scope="module")
def stub() -> Iterator[Stub]:
    yield from _serving(Stub(port=0))


@pytest.fixture(scope="module")
def tls_stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stub]:
    """The stub over HTTPS, with a self-signed certificate for 127.0.0.1 in ``Stub.certificate``."""
    folder = tmp_path_factory.mktemp("tls")
    key, certificate = folder / "key.pem", folder / "certificate.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    yield from _serving(Stub(port=0, scheme="https", certificate=certificate), context)


def _serving(state: Stub, context: ssl.SSLContext | None = None) -> Iterator[Stub]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def chip(tmp_path: Path) -> Path:
    """A file to send: the stub does not decode it."""
    path = tmp_path / "chip.jpg"
    path.write_bytes(b"\xff\xd8 not really a JPEG \xff\xd9")
    return path


def predict(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``amazonia predict ARGS``: exit status, stdout, stderr."""
    status = main(["predict", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status: int, out: str, err: str, *parts: str) -> None:
    """Exit status 1, nothing on stdout, and one line on stderr, ``error: ...`` holding ``parts``."""
    assert (status, out) == (1, ""), err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for part in parts:
        assert part in err, err


def run_predict(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
    """The installed ``amazonia predict`` in a fresh process, its address space capped so that
    a client reading a device without end fails fast instead of filling the machine."""

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    return subprocess.run(
        [str(BIN / "amazonia"), "predict", *args],
        capture_output=True, text=True, env=tool_env(**env), timeout=timeout, preexec_fn=cap_memory,
    )  # fmt: skip


# --- good answers, and what is sent ---------------------------------------------------------


def test_the_stub_answers_a_good_run_and_gets_every_file_whole(
    stub: Stub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Sizes around base64's groups of 3, and one file read in more than one piece.
    sizes = [0, 1, 2, 3, 4, 3 * 2**20 + 2, 5]
    files = []
    for i, size in enumerate(sizes):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(os.urandom(size))
    stub.received.clear()
    status, out, err = predict(capsys, *map(str, files), "--url", stub.url("good"))
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"{f}: clear (0.70); ground: {', '.join(f'{g} (0.60)' for g in LABELS_GROUND)}" for f in files
    ]
    assert [image for request in stub.received for image in request] == [f.read_bytes() for f in files]


def test_json_output_is_one_indented_array(
    stub: Stub, chip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = predict(capsys, str(chip), str(chip), "--url", stub.url("good"), "--json")
    assert (status, err) == (0, "")
    results = json.loads(out)
    assert [r["image"] for r in results] == [str(chip)] * 2
    assert out == json.dumps(results, indent=2) + "\n"


def test_a_reader_that_goes_away_ends_the_command_quietly(stub: Stub, chip: Path) -> None:
    proc = subprocess.Popen(
        [str(BIN / "amazonia"), "predict", str(chip), "--url", stub.url("good")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tool_env(),
    )  # fmt: skip
    proc.stdout.close()  # before it writes: its first line meets a closed pipe
    stderr = proc.stderr.read()
    assert proc.wait(timeout=30) == 141  # 128 + SIGPIPE, as the shell reports `cat` cut off
    assert stderr == b""


@pytest.mark.slow
def test_https_is_spoken_with_the_certificate_checked(tls_stub: Stub, chip: Path) -> None:
    trusted = run_predict(str(chip), "--url", tls_stub.url("good"), SSL_CERT_FILE=str(tls_stub.certificate))
    assert (trusted.returncode, trusted.stderr) == (0, "")
    assert trusted.stdout.startswith(f"{chip}: clear (0.70); ground: ")
    untrusted = run_predict(str(chip), "--url", tls_stub.url("good"))
    assert (untrusted.returncode, untrusted.stdout) == (1, "")
    assert untrusted.stderr.startswith(
        f"error: cannot reach the model server at {tls_stub.url('good')}/metadata ("
    )
    assert "certificate verify failed" in untrusted.stderr and untrusted.stderr.count("\n") == 1


# --- paths that are no image files ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_only_regular_files_are_read(kind: str, stub: Stub, chip: Path, tmp_path: Path) -> None:
    if kind == "fifo":
        path, what = tmp_path / "pipe.jpg", "a named pipe (FIFO)"
        os.mkfifo(path)
    elif kind == "device":
        path, what = Path("/dev/zero"), "a character device"
    else:
        path, what = tmp_path, "a directory"
    result = run_predict(str(chip), str(path), "--url", stub.url("good"))
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr == f"error: {path}: {what}, not a regular file; pass image files (JPEG, PNG)\n"


def test_assets_on_disk_are_read_only_from_regular_files(stub: Stub, chip: Path, tmp_path: Path) -> None:
    extra = tmp_path / "PlanetModel" / "1" / "assets.extra"
    extra.mkdir(parents=True)
    (extra / "label_map.json").write_text(json.dumps(GOOD["label_map.json"]))
    os.mkfifo(extra / "thresholds.json")
    result = run_predict(str(chip), "--url", stub.url("good"), "--model-dir", str(tmp_path / "PlanetModel"))
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr == (
        f"error: {extra / 'thresholds.json'}: a named pipe (FIFO), not a regular file; "
        "re-export the model, or copy its folder\n"
    )


# --- malformed answers ----------------------------------------------------------------------

ASSETS = "/versions/1/assets"
MALFORMED = {
    "label-map-empty": (
        f"{ASSETS}/label_map.json: 'weather' must be a non-empty list of label names; got None",
    ),
    "label-map-list": (
        f'{ASSETS}/label_map.json: expected {{"weather": [label, ...], "ground": [label, ...]}}; got [[',
    ),
    "label-map-strings": (
        f"{ASSETS}/label_map.json: 'weather' must be a non-empty list of label names; got 'clear ",
    ),
    "label-map-empty-lists": (
        f"{ASSETS}/label_map.json: 'weather' must be a non-empty list of label names; got []",
    ),
    "label-map-numbers": (f"{ASSETS}/label_map.json: 'weather' holds 0, not a label name",),
    "label-map-repeated": (f"{ASSETS}/label_map.json: 'weather' names 'clear' more than once",),
    "thresholds-list": (
        f'{ASSETS}/thresholds.json: expected {{"ground": {{"<label>": <threshold in [0, 1]>, ...}}}}; '
        "got [0.5",
    ),
    "thresholds-empty": (f"{ASSETS}/thresholds.json: expected", "; got {}"),
    "thresholds-ground-list": (f"{ASSETS}/thresholds.json: expected", "; got {'ground': [0.5"),
    "thresholds-strings": (
        f"{ASSETS}/thresholds.json: the threshold of 'agriculture' is 'high', not a number in [0, 1]",
    ),
    "thresholds-missing": (
        f"{ASSETS}/thresholds.json: the ground thresholds do not match the label map's ground labels "
        "(missing: water; unknown: -)",
    ),
    "thresholds-nan": ("the threshold of 'agriculture' is nan, not a number in [0, 1]",),
    "thresholds-above-one": ("the threshold of 'agriculture' is 1.5, not a number in [0, 1]",),
    "thresholds-bool": ("the threshold of 'agriculture' is True, not a number in [0, 1]",),
    "metadata-no-version": (
        "/metadata: expected model_spec.version, a positive whole number",
        "got {'model_spec': {'name': 'x'}}",
    ),
    "metadata-version-bool": ("/metadata: expected model_spec.version", "'version': True}}"),
    "metadata-version-negative": ("/metadata: expected model_spec.version", "'version': '-1'}}"),
    "metadata-html": (
        "/metadata: the answer is not JSON (it begins b'<html><body>It works!</body></html>'); "
        "is this TF Serving's REST API?",
    ),
    "metadata-too-deep": ("/metadata: the answer is not JSON (it begins b'[[[",),
    "predictions-missing": ("/versions/1:predict: expected {\"predictions\": [...]}; got {'outputs'",),
    "predictions-columnar": (
        "/versions/1:predict: expected {\"predictions\": [...]}; got {'predictions': {",
    ),
    "predictions-too-few": ("/versions/1:predict: 1 images sent, 0 predictions answered",),
    "prediction-not-object": (
        'chip.jpg: expected a prediction {"weather": [...], "ground": [...]}; got [0.7, 0.1, 0.1, 0.1]',
    ),
    "prediction-head-missing": (
        "chip.jpg: the prediction has no list of 'ground' scores; got {'weather': [0.7,",
    ),
    "prediction-head-string": (
        "chip.jpg: the prediction has no list of 'weather' scores; got {'weather': '0.7 0.1",
    ),
    "prediction-short": (
        "chip.jpg: the model gives 3 'weather' scores, the label map names 4 labels; "
        "use the model's own assets",
    ),
    "prediction-nested": ("chip.jpg: the 'weather' score of 'clear' is [0.7], not a number",),
    "prediction-string-scores": ("chip.jpg: the 'weather' score of 'clear' is '0.7', not a number",),
    "prediction-nan": (
        "chip.jpg: the 'weather' score of 'clear' is nan; a model that answers NaN or infinity is broken",
    ),
    "prediction-infinity": (
        "chip.jpg: the 'ground' score of 'agriculture' is inf; "
        "a model that answers NaN or infinity is broken",
    ),
    "prediction-minus-infinity": ("chip.jpg: the 'ground' score of 'agriculture' is -inf;",),
    "prediction-above-one": ("chip.jpg: the 'weather' score of 'clear' is 1.7, not a probability in [0, 1]",),
    "predict-not-json": ("/versions/1:predict: the answer is not JSON (it begins b'predictions: clear')",),
    "predict-cut-short": (
        "/versions/1:predict: not a complete HTTP answer (IncompleteRead(17 bytes read, 983 more expected))",
    ),
    "predict-huge": (f"/versions/1:predict: the answer is larger than {MAX_ANSWER_BYTES // 2**20} MiB",),
}


@pytest.mark.parametrize("scenario", sorted(MALFORMED))
def test_a_malformed_answer_is_a_one_line_error_naming_what_was_wrong(
    scenario: str, stub: Stub, chip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = predict(capsys, str(chip), "--url", stub.url(scenario))
    assert_one_line_error(status, out, err, *MALFORMED[scenario])


def test_assets_on_disk_are_checked_as_the_servers_are(
    stub: Stub, chip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = tmp_path / "PlanetModel" / "1" / "assets.extra"
    extra.mkdir(parents=True)
    (extra / "label_map.json").write_text(json.dumps(GOOD["label_map.json"]))
    (extra / "thresholds.json").write_text(json.dumps(SCENARIOS["thresholds-strings"]["thresholds.json"]))
    status, out, err = predict(
        capsys, str(chip), "--url", stub.url("good"), "--model-dir", str(tmp_path / "PlanetModel")
    )
    assert_one_line_error(
        status,
        out,
        err,
        f"{extra / 'thresholds.json'}: the threshold of 'agriculture' is 'high', not a number in [0, 1]",
    )


def test_a_refused_batch_is_sent_file_by_file_to_name_the_file_at_fault(
    stub: Stub, chip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"bad")
    stub.received.clear()
    status, out, err = predict(
        capsys, str(chip), str(bad), str(chip), "--url", stub.url("predict-refuses-bad")
    )
    assert_one_line_error(
        status, out, err, f"error: {bad}: the server refused it (HTTP 400): cannot decode the image\n"
    )
    assert [len(request) for request in stub.received] == [3, 1, 1]  # the batch, then one by one


def test_a_request_refused_before_it_was_sent_whole_names_the_file(
    stub: Stub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Far more than the socket buffers hold: the stub answers 413 and closes while it is sent.
    big = tmp_path / "big.jpg"
    big.write_bytes(bytes(32 * 2**20))
    status, out, err = predict(capsys, str(big), "--url", stub.url("predict-refused-early"))
    assert_one_line_error(
        status, out, err, f"{big}: {32 * 2**20} bytes (", "as a request) is more than the server takes "
        "(HTTP 413: too large for this stub); send a smaller image, or raise the server's limit",
    )  # fmt: skip


# --- the timeout bounds the whole request ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "scheme"), [("trickle-all", "http"), ("trickle-body", "http"), ("trickle-all", "https")]
)
def test_timeout_cuts_off_a_server_that_trickles_its_answer(
    scenario: str, scheme: str, request: pytest.FixtureRequest, chip: Path
) -> None:
    # Each byte comes well within the timeout, so only a bound on the whole request ends it
    # before the ~40 s the answer takes; a per-read timeout never fires.
    stub = request.getfixturevalue("tls_stub" if scheme == "https" else "stub")
    certificate = {"SSL_CERT_FILE": str(stub.certificate)} if stub.certificate else {}
    result = run_predict(
        str(chip), "--url", stub.url(scenario), "--timeout", str(TRICKLE_TIMEOUT_S), **certificate
    )
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    late = "/metadata" if scenario == "trickle-all" else "/versions/1:predict"
    assert result.stderr == (
        f"error: {stub.url(scenario)}{late}: no complete answer within {TRICKLE_TIMEOUT_S} s; "
        "is the server overloaded or the network slow? (--timeout sets the seconds per request)\n"
    )
