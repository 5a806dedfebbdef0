"""HTTP exchanges bounded in total: connect, send and every byte of the answer within one timeout.

requests and urllib3 time each socket operation, not the exchange: a server that sends a byte
a second never trips a 3 s read timeout, and urllib3's ``Timeout(total=...)`` only shortens
that per-read limit (its documentation says so). Here an exchange has a deadline, and every
connect, send and receive is given only the time left until it, so a trickling server is cut
off at the timeout. No thread watches the clock: the socket's own timeout does, re-armed
before each operation, and ``sendall`` counts its timeout over the whole send.

The standard library's ``http.client`` carries the exchange, one connection each: the client
sends a handful of requests per run, so keeping connections alive would save ~0.1 ms each and
cost the bookkeeping of stale ones. Proxies from the environment are not used.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from amazonia.client.errors import ClientError, HttpError

# Far above any answer this model gives (~0.5 KB per image; a few KB of metadata): a server
# streaming without end is cut off here rather than filling memory before the deadline.
MAX_ANSWER_BYTES = 16 * 2**20
MAX_MESSAGE_CHARS = 300  # of a server's error message, in our one-line errors
USER_AGENT = "amazonia-predict"


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, read whole."""

    status: int
    reason: str
    body: bytes


def get_json(url: str, timeout: float) -> Any:
    """The JSON answer of ``GET url``.

    Raises:
        HttpError: the server answered with a status other than 200.
        ClientError: no complete answer within ``timeout`` seconds, or it is not JSON.
    """
    return _json(url, exchange("GET", url, timeout))


def post_json(url: str, body: Iterable[bytes], length: int, timeout: float) -> Any:
    """The JSON answer of ``POST url`` with a JSON document of ``length`` bytes, sent piece by
    piece as ``body`` yields it; raises as :func:`get_json`."""
    return _json(url, exchange("POST", url, timeout, (length, body)))


def exchange(
    method: str, url: str, timeout: float, body: tuple[int, Iterable[bytes]] | None = None
) -> Answer:
    """Send one request, with ``body`` given as ``(length, pieces)``, and read its whole answer,
    all within ``timeout`` seconds.

    Raises:
        ClientError: the URL is not http(s), the server cannot be reached, the exchange did
            not complete within ``timeout``, or the answer is not HTTP or too large.
    """
    scheme, host, port, target = _split(url)
    connection_type = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    deadline = time.monotonic() + timeout
    connection = connection_type(host, port, timeout=timeout)
    try:
        try:
            connection.connect()
        except TimeoutError:
            raise _timed_out(url, timeout) from None
        except OSError as err:
            raise ClientError(
                f"cannot reach the model server at {url} ({_reason(err)}); start it with 'amazonia serve' "
                "or pass --url"
            ) from None
        raw_socket = connection.sock
        connection.sock = _DeadlineSocket(raw_socket, deadline)
        try:
            return _send_and_read(connection, method, target, body, url)
        except TimeoutError:
            raise _timed_out(url, timeout) from None
        except http.client.HTTPException as err:
            raise ClientError(
                f"{url}: not a complete HTTP answer ({_reason(err)}); is this TF Serving?"
            ) from None
        except OSError as err:
            raise ClientError(f"{url}: the connection failed ({_reason(err)}); is the server up?") from None
        finally:
            raw_socket.close()
    finally:
        connection.close()


def _send_and_read(
    connection: http.client.HTTPConnection,
    method: str,
    target: str,
    body: tuple[int, Iterable[bytes]] | None,
    url: str,
) -> Answer:
    headers = {"User-Agent": USER_AGENT, "Connection": "close"}
    pieces = None
    if body is not None:
        headers.update({"Content-Type": "application/json", "Content-Length": str(body[0])})
        pieces = body[1]
    try:
        connection.request(method, target, body=pieces, headers=headers)
    except (BrokenPipeError, ConnectionResetError) as err:
        # A server may refuse a body (413) before it has all of it, answer, and close: its
        # answer says more than the broken pipe does, so read it if it is there.
        unsent: OSError | None = err
    else:
        unsent = None
    try:
        response = connection.getresponse()
        data = response.read(MAX_ANSWER_BYTES + 1)
    except (OSError, http.client.HTTPException) as err:
        if unsent is None or isinstance(err, TimeoutError):
            raise
        length = body[0] if body is not None else 0
        raise ClientError(
            f"{url}: the server closed the connection while the request ({length} bytes) was sent "
            f"({_reason(unsent)}); is it over the server's body limit?"
        ) from None
    if len(data) > MAX_ANSWER_BYTES:
        raise ClientError(
            f"{url}: the answer is larger than {MAX_ANSWER_BYTES // 2**20} MiB; "
            "is this TF Serving's REST API?"
        )
    if response.length:  # what Content-Length promised and the connection, closed, did not bring
        raise http.client.IncompleteRead(data, response.length)
    return Answer(response.status, response.reason, data)


class _DeadlineSocket:
    """What ``http.client`` uses of a socket (``sendall``, ``makefile``, ``close``), each
    operation given only the time left until ``deadline``; closing is left to the caller,
    as the answer may still be read after the connection is done with it."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def arm(self) -> None:
        """Set the socket's timeout to the time left; TimeoutError if there is none."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self._sock.settimeout(left)

    def sendall(self, data: bytes) -> None:
        self.arm()
        self._sock.sendall(data)  # since Python 3.5 the timeout bounds the whole send

    def makefile(self, mode: str) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"only 'rb' is supported, not {mode!r}")
        return io.BufferedReader(_DeadlineReader(self._sock, self))

    def close(self) -> None:
        pass


class _DeadlineReader(io.RawIOBase):
    """Bytes from a socket, each receive within the time left."""

    def __init__(self, sock: socket.socket, clock: _DeadlineSocket) -> None:
        self._sock, self._clock = sock, clock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._clock.arm()
        return self._sock.recv_into(buffer)


def _split(url: str) -> tuple[str, str, int | None, str]:
    """``(scheme, host, port, path?query)`` of an http(s) URL."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ClientError(
            f"{url}: not an http(s) URL with a host; pass --url http://HOST:PORT/v1/models/NAME"
        )
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.scheme, parts.hostname, port, target


def _json(url: str, answer: Answer) -> Any:
    """The answer's JSON body; :class:`HttpError` with the server's ``{"error": ...}`` if its
    status is not 200."""
    try:
        body, parsed = json.loads(answer.body), True
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        body, parsed = None, False
    if answer.status != 200:
        message = body.get("error") if isinstance(body, dict) else None
        text = str(message) if message is not None else answer.reason or "no message"
        raise HttpError(url, answer.status, _clip(text))
    if not parsed:
        raise ClientError(
            f"{url}: the answer is not JSON (it begins {answer.body[:40]!r}); is this TF Serving's REST API?"
        )
    return body


def _timed_out(url: str, timeout: float) -> ClientError:
    return ClientError(
        f"{url}: no complete answer within {timeout:g} s; is the server overloaded or the network slow? "
        "(--timeout sets the seconds per request)"
    )


def _reason(err: BaseException) -> str:
    """'Connection refused' rather than the errno's repr."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return _clip(" ".join(text.split()))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."
