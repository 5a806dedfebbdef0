"""``amazonia serve``'s limits on work and connections: the per-request budgets and the
decode scheduler in process, then a server of its own (short write timeout, large body
limit, short grace at shutdown) for what the shared one cannot show: clients that stop
reading, and a shutdown that cuts a request off. Its last test stops it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from amazonia.serving import budgets
from tests.conftest import MODEL, Exported, Server, serving

SOCKET_WAIT_S = 60  # a bound on any wait for the server: a failure, not a measurement
LIMITS_SERVER_PARAMS = {
    "max_body_mb": 6,  # room for requests whose error answer, quoted whole, outgrows the kernel buffers
    "keep_alive_seconds": 1,
    "read_timeout_seconds": 3,
    "write_timeout_seconds": 2,
    "max_unsent_kb": 1_048_576,  # the write timeout, not the cap, drops who stops reading here
    "graceful_shutdown_seconds": 1,
}
ATTACKERS = 64  # serve.max_connections' default: every slot


# --- in process -----------------------------------------------------------------------------


def test_model_calls_are_sliced_by_instances_and_decoded_pixels() -> None:
    big = budgets.MAX_CALL_PIXELS
    assert budgets.call_slices([]) == [(0, 0, 0)]
    assert budgets.call_slices([0] * 150) == [(0, 64, 0), (64, 128, 0), (128, 150, 0)]
    # One image past the call budget is a call of its own; small ones share one.
    assert budgets.call_slices([10, big + 1, 10, 10]) == [(0, 1, 10), (1, 2, big + 1), (2, 4, 20)]
    assert budgets.call_slices([big // 2] * 3) == [(0, 2, big - big % 2), (2, 3, big // 2)]


def test_the_decode_scheduler_gives_a_freed_slot_to_the_lightest_waiting_call() -> None:
    order: list[str] = []

    async def scenario() -> None:
        scheduler = budgets.DecodeScheduler(1)
        release = asyncio.Event()

        async def call(name: str, pixels: int, hold: asyncio.Event | None = None) -> None:
            async with scheduler.slot(pixels):
                order.append(name)
                if hold is not None:
                    await hold.wait()

        running = asyncio.create_task(call("running", 10**7, release))
        await asyncio.sleep(0)
        waiting = [
            asyncio.create_task(call(name, pixels))
            for name, pixels in (
                ("heavy", 10**7),
                ("heavier", 2 * 10**7),
                ("chip", 65_536),
                ("heavy 2", 10**7),
            )
        ]
        cancelled = asyncio.create_task(call("cancelled", 1))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        assert scheduler.waiting == 4
        release.set()
        await asyncio.gather(running, *waiting)
        assert scheduler.waiting == 0
        async with scheduler.slot(1):  # every slot was given back
            order.append("after")

    asyncio.run(scenario())
    assert order == ["running", "chip", "heavy", "heavy 2", "heavier", "after"]


# --- a server of its own --------------------------------------------------------------------


@pytest.fixture(scope="module")
def limits_server(exported: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(exported.base_path, tmp_path_factory.mktemp("limits-server"), LIMITS_SERVER_PARAMS)


def _non_reading_client(server: Server) -> socket.socket:
    """A connection whose receive buffer is tiny: what the server sends piles up on its side."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(SOCKET_WAIT_S)
    sock.connect(("127.0.0.1", server.port))
    return sock


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


def test_an_answer_the_client_stops_taking_is_dropped_after_the_write_timeout(limits_server: Server) -> None:
    # More answers than the kernel's buffers hold: the rest waits in the server, which
    # uvicorn would keep, with the request's task and the connection's slot, for good.
    metadata_request = f"GET /v1/models/{MODEL}/metadata HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    pipelined = 16 * 2**20 // len(limits_server.get("/metadata").content)  # answers: far past the kernel's
    sock = _non_reading_client(limits_server)

    def send() -> None:
        with contextlib.suppress(OSError):  # blocks once the server stops reading; fails once dropped
            sock.sendall(metadata_request * pipelined)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        assert _reset_unread(sock) == errno.ECONNRESET
    finally:
        sock.close()
        sender.join()
    assert limits_server.get().status_code == 200


def test_clients_that_never_read_lose_their_slots_and_others_are_answered(limits_server: Server) -> None:
    # Sixty-four clients each send a request whose error answer quoted the megabytes sent,
    # and never read: their unsent answers held every slot (503 for everyone else).
    name = "n" * 5 * 2**20  # quoted whole, more than the kernel takes on a connection (~3-4 MB)
    body = json.dumps({"signature_name": name, "instances": [1]}).encode()
    head = (
        f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    attackers = []
    try:
        for _ in range(ATTACKERS):
            sock = _non_reading_client(limits_server)
            attackers.append(sock)
            try:
                sock.sendall(head + body)
            except OSError:  # answered 503 and closed while still sending: over the limit
                pass
        statuses = []
        deadline = time.monotonic() + SOCKET_WAIT_S
        while time.monotonic() < deadline:
            status = requests.get(limits_server.model_url, timeout=SOCKET_WAIT_S).status_code
            statuses.append(status)
            if status == 200:
                break
            time.sleep(0.2)
        assert statuses[-1] == 200, f"{len(statuses)} tries: {sorted(set(statuses))}"
        for sock in attackers:  # what each got: one short answer, then the connection closed
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except OSError:
                pass
            assert len(received) < 4096, received[:300]
    finally:
        for sock in attackers:
            sock.close()


def test_a_request_cut_off_by_shutdown_is_503_without_a_traceback(limits_server: Server) -> None:
    # The last test of the module: it stops the server. A request still running when the
    # grace period ends must get a 503, and its cancellation no traceback in the log.
    sock = socket.create_connection(("127.0.0.1", limits_server.port), timeout=SOCKET_WAIT_S)
    sock.sendall(
        f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
        + b'{"instances": ['
    )  # and the rest of the body never: the request runs until it is cut off
    time.sleep(0.5)  # the server has taken the request up
    limits_server.proc.send_signal(signal.SIGTERM)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), answer
    assert json.loads(body) == {
        "error": "the server is shutting down and this request did not finish within 1 s "
        "(serve.graceful_shutdown_seconds); send it again"
    }
    limits_server.proc.wait(
        timeout=SOCKET_WAIT_S
    )  # uvicorn ends by re-raising SIGTERM: no exit status to check
    log = limits_server.log.read_text()
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert f"POST /v1/models/{MODEL}:predict cut off: still running 1 s after shutdown began" in log
