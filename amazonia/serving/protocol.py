"""HTTP/1.1 connections with the limits uvicorn lacks: uvicorn's h11 protocol, bounded.

uvicorn bounds connections at once (``limit_concurrency``) and idle time between
requests (``timeout_keep_alive``); a connection that holds a slot in any other way holds
it for good, and every other client is answered 503. :class:`BoundedH11Protocol` adds:

* a read timeout: a request head must arrive within ``read_timeout_s`` of the connection
  opening (or of its first byte on a kept-alive one); the body of a request answered
  before it was read (status, metadata, an unknown path) within ``read_timeout_s`` too;
* a write timeout: answer bytes the kernel could not take (the client stopped reading)
  must be taken within ``write_timeout_s``, else the connection is dropped; uvicorn
  would wait for them for good, in a task that counts against ``limit_concurrency``,
  and even a closed connection keeps its slot while its unsent bytes wait;
* a cap on unsent answer bytes: a client with more than ``max_unsent_bytes`` of answers
  not taken (the server's buffer and the kernel's send queue) that sends another request
  is dropped, before that request costs anything;
* strict framing (RFC 9112): a request head over ``max_head_bytes`` is refused whole,
  not only while incomplete (h11's ``max_incomplete_event_size`` measures a head only
  while it is incomplete: one that arrives in a single read passes at any size);
  ``Content-Length`` together with ``Transfer-Encoding`` is refused (section 6.3); HTTP
  versions other than 1.0 and 1.1 are refused; and every such refusal, as every framing
  error h11 finds, closes the connection: nothing after it is read;
* a lingering close (nginx's ``lingering_close``, Apache's): a connection closed after an
  answer while its client may still be sending (a refusal, a body not read to its end,
  bytes pipelined behind) is half-closed, and what the client sends is read and discarded
  until it closes, for at most ``LINGER_SECONDS`` and ``LINGER_MAX_BYTES``. Closed with
  bytes unread, the kernel resets the connection, and the reset can destroy the answer
  before the client reads it: the client sees "connection reset" instead of the error.

Refusals are TF Serving's ``{"error": ...}`` JSON with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from amazonia.serving import rest

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = (b"1.0", b"1.1")
HEAD_TOO_LARGE = 431  # Request Header Fields Too Large (RFC 6585); h11's hint too
VERSION_NOT_SUPPORTED = 505
BAD_REQUEST = 400
# A lingering close ends after LINGER_SECONDS, or once LINGER_MAX_BYTES are discarded: a
# client that reads its answer sees the end of it and closes within a round trip, and one
# still sending when it was refused has the rest of a head, or the last writes of a body, to
# send (the app reads a body over the limit up to a bound before refusing it, see
# server.read_body); a client that sends past either is sending for good, and must not hold
# its slot, nor make the server read a local link's gigabytes a second.
LINGER_SECONDS = 2.0  # Apache's lingering wait
LINGER_MAX_BYTES = 8 * 2**20  # milliseconds of reading, on a local link
try:  # SIOCOUTQ, SIOCINQ on a socket (Linux): bytes sent but not yet acknowledged; received, not read
    import fcntl
    import termios

    _OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)
    _INQ: int | None = getattr(termios, "FIONREAD", None)
except ImportError:  # pragma: no cover - not POSIX
    _OUTQ = _INQ = None


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may take: see the module docstring."""

    read_timeout_s: float
    write_timeout_s: float
    max_head_bytes: int
    max_unsent_bytes: int


class StrictConnection(h11.Connection):
    """h11's server connection that also refuses what RFC 9112 asks servers to refuse
    (module docstring), remembering why in :attr:`refusal` for the answer."""

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes
        self.refusal: tuple[int, str] | None = None  # (status, message) of the last refused request
        self.answered = False  # our answer of this request/response cycle is sent whole

    def send(self, event: Any) -> bytes | None:
        data = super().send(event)
        if type(event) is h11.EndOfMessage:
            self.answered = True
        return data

    def start_next_cycle(self) -> None:
        super().start_next_cycle()
        self.answered = False

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as err:
            self.refusal = self._describe(err)
            raise
        if type(event) is h11.Request:
            self.refusal = _refusal(event, self.max_head_bytes)
            if self.refusal is not None:
                raise h11.RemoteProtocolError(self.refusal[1], error_status_hint=self.refusal[0])
        return event

    def _describe(self, err: h11.RemoteProtocolError) -> tuple[int, str]:
        if err.error_status_hint == HEAD_TOO_LARGE:
            return HEAD_TOO_LARGE, _head_too_large(None, self.max_head_bytes)
        return BAD_REQUEST, f"Invalid HTTP request: {err}; the connection is closed"


def _refusal(request: h11.Request, max_head_bytes: int) -> tuple[int, str] | None:
    """Why a parsed request head is refused, or None."""
    if request.http_version not in SUPPORTED_VERSIONS:
        version = request.http_version.decode("ascii", "replace")
        return VERSION_NOT_SUPPORTED, f"HTTP/{version} is not supported: send HTTP/1.1 (or HTTP/1.0)"
    size = head_size(request)
    if size > max_head_bytes:
        return HEAD_TOO_LARGE, _head_too_large(size, max_head_bytes)
    names = {name for name, _ in request.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        return BAD_REQUEST, (
            "Invalid HTTP request: Content-Length and Transfer-Encoding both given, which RFC 9112 section "
            "6.3 asks servers to refuse (request smuggling); send one of them. The connection is closed"
        )
    return None


def head_size(request: h11.Request) -> int:
    """Bytes of the request line and headers as sent, but for whitespace h11 dropped."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items()) + 2


def _head_too_large(size: int | None, limit: int) -> str:
    what = f"of {size:,} bytes " if size is not None else ""
    return (
        f"Request line and headers {what}larger than this server's limit of {limit:,} bytes "
        "(serve.max_header_kb); send fewer or shorter headers"
    )


def _socket_queue(transport: asyncio.Transport, request: int | None) -> int:
    """Bytes in a socket's send (``_OUTQ``) or receive (``_INQ``) queue; 0 where unknown."""
    sock = transport.get_extra_info("socket")
    if request is None or sock is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0]
    except OSError:
        return 0


class ClosingTransport:
    """A socket's transport as uvicorn sees it: ``close()`` is ``close`` (the protocol's,
    which may linger), and the connection is closing while it lingers; the rest is the
    socket transport's."""

    def __init__(
        self, transport: asyncio.Transport, close: Callable[[], None], lingering: Callable[[], bool]
    ) -> None:
        self.socket_transport = transport
        self._close = close
        self._lingering = lingering

    def __getattr__(self, name: str) -> Any:
        return getattr(self.socket_transport, name)

    def close(self) -> None:
        self._close()

    def is_closing(self) -> bool:
        return self._lingering() or self.socket_transport.is_closing()


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the timeouts, cap, framing rules and lingering close of the
    module docstring."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.conn = StrictConnection(limits.max_head_bytes)
        self.socket_transport: asyncio.Transport = None  # type: ignore[assignment]
        self._head_timer: asyncio.TimerHandle | None = None
        self._answered_body_timer: asyncio.TimerHandle | None = None
        self._answered_cycle: object = None  # uvicorn's RequestResponseCycle answered before its body
        self._write_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingered_bytes = 0

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.socket_transport = transport  # type: ignore[assignment]
        # Every close, uvicorn's included, comes to close_connection().
        closing = ClosingTransport(self.socket_transport, self.close_connection, self.is_lingering)
        super().connection_made(closing)  # type: ignore[arg-type]
        # Pause (and start the write timer) as soon as anything is left unsent: uvicorn
        # then writes no further answer until the client has taken this one.
        self.transport.set_write_buffer_limits(high=0)
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        if self.is_lingering():
            self._lingered_bytes += len(data)
            if self._lingered_bytes > LINGER_MAX_BYTES:
                self._end_linger(f"{LINGER_MAX_BYTES:,} bytes")
            return
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._start_head_timer()  # a next request begins on a kept-alive connection
        super().data_received(data)
        if self._answered_body_timer is not None and not self._awaiting_answered_body():
            self._stop_answered_body_timer()
            if self.conn.their_state is h11.IDLE and self._head_timer is None:
                self._start_head_timer()  # uvicorn began the next cycle without a keep-alive timeout
        if self.conn.their_state is not h11.IDLE:
            self._stop_head_timer()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.write_timeout_s, self._write_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._answered_body_timer, self._write_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._answered_body_timer = self._write_timer = self._linger_timer = None
        self._answered_cycle = None
        super().connection_lost(exc)

    # --- uvicorn's H11Protocol -----------------------------------------------------------

    def handle_events(self) -> None:
        # Called for every read and once an answer is complete. A request head waiting to
        # be read while earlier answers are not taken tells a client that does not read
        # from one that does (which reads an answer before asking again).
        if (
            self.conn.their_state is h11.IDLE
            and self.conn.trailing_data[0]
            and not self.transport.is_closing()
        ):
            unsent = self._unsent_bytes()
            if unsent > self.limits.max_unsent_bytes:
                log.info(
                    "dropped a connection: %d answer bytes not taken, more than %d (serve.max_unsent_kb)",
                    unsent,
                    self.limits.max_unsent_bytes,
                )
                self._drop()
                return
        super().handle_events()

    def shutdown(self) -> None:
        if self.is_lingering():  # the answer is out: nothing to wait for at shutdown
            self.socket_transport.close()
            return
        super().shutdown()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._answered_cycle = self.cycle
            self._answered_body_timer = self.loop.call_later(
                self.limits.read_timeout_s, self._answered_body_timed_out
            )

    def send_400_response(self, msg: str) -> None:
        """Refuse the request h11 could not read or :class:`StrictConnection` refused, with its
        status and TF Serving's JSON error, and close the connection."""
        refusal = getattr(self.conn, "refusal", None) or (BAD_REQUEST, msg)
        self.conn.refusal = None
        if self.cycle is not None and not self.cycle.response_complete:
            # The request being answered ends here: whatever the app sends next is dropped.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            # An answer is under way or sent: nothing more can be said on this connection.
            self.transport.close()
            return
        status, message = refusal
        body = rest.dumps(rest.error_body(message))
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status]),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    # --- closing ---------------------------------------------------------------------------

    def is_lingering(self) -> bool:
        return self._linger_timer is not None

    def close_connection(self) -> None:
        """Close the connection, as ``transport.close()`` does (once the answer is flushed);
        lingering (module docstring) if it follows an answer and the client may still be sending."""
        transport = self.socket_transport
        if self.is_lingering():
            return  # it ends when the client closes, at its bounds, or at shutdown
        if not transport.is_closing() and self.conn.answered and self._client_may_be_sending():
            try:
                transport.write_eof()  # our side ends once the answer is flushed
            except (OSError, NotImplementedError):  # the connection is gone, or TLS: no half-close
                pass
            else:
                self._stop_head_timer()
                self._stop_answered_body_timer()
                self._lingered_bytes = 0
                self._linger_timer = self.loop.call_later(
                    LINGER_SECONDS, self._end_linger, f"{LINGER_SECONDS:g} s"
                )
                transport.resume_reading()
                return
        transport.close()

    def _client_may_be_sending(self) -> bool:
        """Whether the request is unfinished (a refusal, a body not read to its end), or more
        was sent behind it (read, or waiting in the socket)."""
        return (
            self.conn.their_state not in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)
            or bool(self.conn.trailing_data[0])
            or _socket_queue(self.socket_transport, _INQ) > 0
        )

    def _end_linger(self, bound: str) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        log.info("closed a connection after its answer: its client was still sending after %s", bound)
        self.socket_transport.close()

    # --- limits ----------------------------------------------------------------------------

    def _unsent_bytes(self) -> int:
        """Answer bytes the client has not taken: in our buffer, and sent but not acknowledged
        (Linux's SIOCOUTQ; elsewhere our buffer only)."""
        return self.transport.get_write_buffer_size() + _socket_queue(self.socket_transport, _OUTQ)

    def _drop(self) -> None:
        """Close at once with a reset, discarding what the client has not taken: closed
        normally, the kernel would keep trying to deliver it, holding its memory, for minutes."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()

    def _write_timed_out(self) -> None:
        self._write_timer = None
        if self.transport.get_write_buffer_size() > 0:
            log.info(
                "dropped a connection: its answer was not taken within %g s (serve.write_timeout_seconds)",
                self.limits.write_timeout_s,
            )
            self._drop()

    def _awaiting_answered_body(self) -> bool:
        return self.cycle is self._answered_cycle and self.conn.their_state is h11.SEND_BODY

    def _stop_answered_body_timer(self) -> None:
        if self._answered_body_timer is not None:
            self._answered_body_timer.cancel()
            self._answered_body_timer = None
        self._answered_cycle = None

    def _answered_body_timed_out(self) -> None:
        self._answered_body_timer = None
        if self._awaiting_answered_body() and not self.transport.is_closing():
            log.info(
                "closed a connection: the body of an answered request did not arrive within %g s",
                self.limits.read_timeout_s,
            )
            self.transport.close()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.read_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection: no request head within %g s", self.limits.read_timeout_s)
            self.transport.close()
