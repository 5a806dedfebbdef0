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
  error h11 finds, closes the connection: nothing after it is read.

Refusals are TF Serving's ``{"error": ...}`` JSON with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
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
try:  # SIOCOUTQ on a socket (Linux): bytes sent but not yet acknowledged
    import fcntl
    import termios

    _OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)
except ImportError:  # pragma: no cover - not POSIX
    _OUTQ = None


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


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the timeouts, cap and framing rules of the module docstring."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.conn = StrictConnection(limits.max_head_bytes)
        self._head_timer: asyncio.TimerHandle | None = None
        self._answered_body_timer: asyncio.TimerHandle | None = None
        self._answered_cycle: object = None  # uvicorn's RequestResponseCycle answered before its body
        self._write_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        # Pause (and start the write timer) as soon as anything is left unsent: uvicorn
        # then writes no further answer until the client has taken this one.
        self.transport.set_write_buffer_limits(high=0)
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
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
        for timer in (self._head_timer, self._answered_body_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._answered_body_timer = self._write_timer = None
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

    # --- limits ----------------------------------------------------------------------------

    def _unsent_bytes(self) -> int:
        """Answer bytes the client has not taken: in our buffer, and sent but not acknowledged
        (Linux's SIOCOUTQ; elsewhere our buffer only)."""
        unsent = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if _OUTQ is not None and sock is not None:
            try:
                unsent += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
            except OSError:
                pass
        return unsent

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
