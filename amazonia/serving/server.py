"""A local server that speaks TensorFlow Serving's REST API over ``models/<name>/``.

``tensorflow_model_server`` cannot be installed everywhere, so ``amazonia serve`` offers
the same contract over the same folder: whatever works against one works against the
other. It is a FastAPI app (:func:`create_app`) run by uvicorn:

* ``GET /v1/models/<name>[/versions/<n>]``: ``model_version_status``;
* ``GET /v1/models/<name>[/versions/<n>]/metadata``: the signature defs;
* ``POST /v1/models/<name>[/versions/<n>]:predict``: ``instances``/``inputs`` in,
  ``predictions``/``outputs`` out (conversion in :mod:`amazonia.serving.rest`);
* ``GET /v1/models/<name>[/versions/<n>]/assets/<label_map.json|thresholds.json>``:
  **our extension**, not TF Serving's: the files of ``assets.extra/``, so that a client
  can turn outputs into tags without access to the model folder;
* ``.../labels/<label>`` in place of ``/versions/<n>``: TF Serving's version labels.
  Labels are set in a model config file; without one there are none, and a label is
  TF Serving's 400 (``Unrecognized servable version label``), but for the status,
  which TF Serving answers ignoring the label.

Paths are matched as sent, as TF Serving's regexes match them, and the model name and
label percent-decoded after (``%2F`` is part of a name, not a ``/``).

Which versions are served, and how they are reloaded, is
:class:`amazonia.serving.repository.ModelRepository`'s business.

Hostile or unlucky clients are bounded (:func:`serve`, ``serve.*`` in params.yaml): a
request's head, then its body, must arrive within ``read_timeout_seconds``; bodies are
at most ``max_body_mb``, gunzipped too; idle connections close after
``keep_alive_seconds``; beyond ``max_connections`` at once uvicorn answers 503. Every
request error is a 4xx with TF Serving's ``{"error": ...}`` body; a 500 means a fault
of the server, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import socket
import zlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import anyio.to_thread
import h11
import numpy as np
import tensorflow as tf
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from amazonia.common.params import ServeParams
from amazonia.data.records import images
from amazonia.export.contract import (
    LABEL_MAP_ASSET,
    SIGNATURE_FLOAT,
    THRESHOLDS_ASSET,
)
from amazonia.export.saved_model import tf_error_message
from amazonia.serving import rest
from amazonia.serving.repository import LoadedVersion, ModelRepository, Signature
from amazonia.serving.rest import NOT_FOUND, PAYLOAD_TOO_LARGE, REQUEST_TIMEOUT, RestError, bad_request

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = SIGNATURE_FLOAT  # "serving_default", TF Serving's default signature key too
ASSETS = (LABEL_MAP_ASSET, THRESHOLDS_ASSET)
MIN_DRAIN_BYTES = 64 * 2**20
MAX_CALL_BATCH = 64  # instances per model call; larger requests are run in slices
PREDICT_CONCURRENCY = max(4, 2 * (os.cpu_count() or 1))  # predictions running at once; others wait
MAX_VERSION = 2**63 - 1  # versions are int64 in TF Serving's ModelSpec
CLOSE = {"connection": "close"}  # on answers sent before the body was read to its end


# --- requests -----------------------------------------------------------------------------


def predict(
    repository: ModelRepository, name: str, version: int | None, body: bytes, label: str | None = None
) -> bytes:
    """Answer one ``:predict`` body with TF Serving's JSON; blocking, run it in a thread.

    Checks come in TF Serving's order: the body is parsed, the model and signature are
    looked up (an unknown model is 404 whatever the body holds), then the tensors are read.
    """
    request = rest.parse_predict_request(body, DEFAULT_SIGNATURE)
    model = servable(repository, name, version, label)
    signature = model.signatures.get(request.signature_name)
    if signature is None:
        raise bad_request(f'Serving signature name: "{request.signature_name}" not found in signature def')
    tensors = rest.request_tensors(request, signature.inputs)
    _check_image_sizes(tensors)
    try:
        outputs = run_signature(signature, tensors)
    except (tf.errors.OpError, ValueError, TypeError) as err:
        # TF Serving answers what the model refuses (undecodable image bytes...) with 400.
        raise bad_request(tf_error_message(err)) from None
    return rest.predict_response(outputs, request.row_format)


def servable(repository: ModelRepository, name: str, version: int | None, label: str | None) -> LoadedVersion:
    """The loaded version a request names: by ``label``, by ``version``, else the highest."""
    if label is not None:  # labels come from a model config file; without one there are none
        raise bad_request(f"Unrecognized servable version label: {label}")
    return repository.get(name, version)


def run_signature(signature: Signature, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Call the signature on slices of at most MAX_CALL_BATCH instances.

    The answer is the same as in one call; but the memory is bounded: 30 MB of tiny
    PNGs would otherwise all be decoded to S x S floats at once.
    """
    sizes = {len(v) if v.ndim else -1 for v in tensors.values()}
    batch = sizes.pop() if len(sizes) == 1 else -1
    if batch <= MAX_CALL_BATCH:  # also scalars and inputs of different lengths: as they are
        return _call(signature, tensors)
    parts = [
        _call(signature, {k: v[start : start + MAX_CALL_BATCH] for k, v in tensors.items()})
        for start in range(0, batch, MAX_CALL_BATCH)
    ]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _call(signature: Signature, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    outputs = signature.function(**{k: tf.constant(v) for k, v in tensors.items()})
    return {name: tensor.numpy() for name, tensor in outputs.items()}


def _check_image_sizes(tensors: Mapping[str, np.ndarray]) -> None:
    """Refuse images that would decode to more pixels than the decode budget (decompression
    bombs): a few KB of PNG can decode to gigabytes; and images TensorFlow's decoder would
    crash the server on. Strings that are no image are left to the model."""
    for name, array in tensors.items():
        if array.dtype != object:
            continue
        for data in array.flat:
            try:
                images.check_decode_budget(data)
            except images.BadImageError as err:
                raise bad_request(f"input '{name}': {err}") from None


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, decompressed if it is gzip (as TF Serving's HTTP server does it);
    413 once it passes ``limit`` bytes (declared, streamed or decompressed); 408 if it has
    not arrived ``timeout_s`` after its head."""
    declared = request.headers.get("content-length", "")  # h11 has checked it is digits
    declared_too_large = declared.isdigit() and (len(declared) > len(str(limit)) or int(declared) > limit)
    try:
        with anyio.fail_after(timeout_s):
            body = await _read_body(request, limit, declared if declared_too_large else "")
    except TimeoutError:
        if declared_too_large:  # refused anyway: say why, not that it was slow
            raise _too_large(limit, f"Request body of {declared} bytes") from None
        raise RestError(
            REQUEST_TIMEOUT,
            f"the request body did not arrive within {timeout_s:g} s of its head "
            "(serve.read_timeout_seconds, --read-timeout); send it at once, or in smaller requests",
        ) from None
    if "gzip" in request.headers.get("content-encoding", ""):  # TF Serving's test, case and all
        body = await anyio.to_thread.run_sync(gunzip, body, limit)
    return body


async def _read_body(request: Request, limit: int, too_large_declared: str) -> bytes:
    """The request body as sent, or 413 once it passes ``limit`` bytes (declared or streamed).

    A refused body is still read (not kept) up to a bound, so that the client, which is
    busy sending, is not reset before it can read the 413.
    """
    too_large = bool(too_large_declared)
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                too_large, chunks = True, []
            if too_large:
                if received > max(4 * limit, MIN_DRAIN_BYTES):
                    break  # not worth reading on: the connection is dropped instead
                continue
            chunks.append(chunk)
    except ClientDisconnect:
        raise bad_request("client disconnected while sending the request body") from None
    if too_large:
        raise _too_large(limit, f"Request body of {too_large_declared or received} bytes")
    return b"".join(chunks)


def _too_large(limit: int, body: str) -> RestError:
    return RestError(
        PAYLOAD_TOO_LARGE,
        f"{body} is larger than this server's limit of {limit} bytes "
        "(serve.max_body_mb, --max-body-mb); send fewer instances per request",
    )


def gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body decompressed, or 413 past ``limit`` bytes: a few KB inflate to gigabytes."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
        complete = decompressor.eof
    except zlib.error as err:
        data, complete, problem = b"", False, str(err)
    else:
        problem = "the gzip stream is cut short"
    if len(data) > limit:
        raise _too_large(limit, "Request body, once gunzipped,")
    if not complete:
        # TF Serving reads a body it cannot gunzip as empty, hence its words first.
        raise bad_request(
            f"JSON Parse error: The document is empty (the body is Content-Encoding: gzip, but cannot be "
            f"gunzipped: {problem}); compress it with gzip, or drop the header"
        )
    return data


def _json(obj: Any, status: int = 200) -> Response:
    return Response(content=rest.dumps(obj), status_code=status, media_type="application/json")


def _malformed(request: Request) -> Response:
    # What TF Serving answers for any /v1/ path it does not know.
    return _json(rest.error_body(f"Malformed request: {request.method} {request.url.path}"), 400)


def create_app(
    model_base_path: Path | str,
    model_name: str,
    poll_seconds: float,
    max_body_bytes: int,
    read_timeout_s: float,
) -> FastAPI:
    """The TF Serving-compatible app serving ``model_base_path`` (``models/<name>/``) as
    ``model_name``; versions are loaded at startup and polled for while it runs."""
    repository = ModelRepository(model_base_path, model_name, poll_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(repository.refresh)
        if not repository.versions:
            log.warning("no loadable version under %s yet; polling every %g s", model_base_path, poll_seconds)
        repository.start()
        try:
            yield
        finally:
            repository.stop()

    app = FastAPI(title="amazonia serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.repository = repository
    app.add_middleware(RawPathRouting)
    _add_error_handlers(app)
    _add_routes(app, repository, max_body_bytes, read_timeout_s)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RestError)
    async def rest_error(request: Request, err: RestError) -> Response:
        response = _json(rest.error_body(err.message), err.status)
        if err.status in (REQUEST_TIMEOUT, PAYLOAD_TOO_LARGE):  # the rest of the body is not read
            response.headers.update(CLOSE)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/v1/") and err.status_code in (404, 405):
            return _malformed(request)
        return _json(rest.error_body(str(err.detail)), err.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> Response:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return _json(rest.error_body(f"internal error: {type(err).__name__}: {err}"), 500)


def _add_routes(
    app: FastAPI, repository: ModelRepository, max_body_bytes: int, read_timeout_s: float
) -> None:
    # Parsing is GIL-bound and inference uses every core, so more predictions at once
    # than this only add memory (a 32 MB body parses to ~300 MB of Python objects).
    predictions = anyio.CapacityLimiter(PREDICT_CONCURRENCY)

    async def status(request: Request) -> Response:
        name, version, _ = _model_spec(request)  # TF Serving's GetModelStatus ignores a label
        return _json(rest.status_response(repository.status(name, version)))

    async def metadata(request: Request) -> Response:
        name, version, label = _model_spec(request)
        model = servable(repository, name, version, label)
        return _json(rest.metadata_response(name, model.version, model.signature_defs))

    async def assets(request: Request) -> Response:
        model = servable(repository, *_model_spec(request))
        asset = unquote(request.path_params["asset"])
        if asset not in ASSETS:
            raise RestError(
                NOT_FOUND,
                f"no asset {asset!r}: this endpoint (amazonia's extension) serves {', '.join(ASSETS)}",
            )
        if asset not in model.assets:
            raise RestError(NOT_FOUND, model.assets_error)
        return _json(model.assets[asset])

    async def predict_route(request: Request) -> Response:
        name, version, label = _model_spec(request)
        body = await read_body(request, max_body_bytes, read_timeout_s)
        answer = await anyio.to_thread.run_sync(
            predict, repository, name, version, body, label, limiter=predictions
        )
        return Response(content=answer, media_type="application/json")

    # Handlers read request.path_params, so FastAPI adds no query or body parameters.
    async def no_model_name(request: Request) -> Response:
        raise bad_request("Missing model name in request.")

    app.add_api_route("/v1/models", no_model_name, methods=["GET"])
    for prefix in (
        "/v1/models/{name}",
        "/v1/models/{name}/versions/{version}",
        "/v1/models/{name}/labels/{label}",
    ):
        app.add_api_route(prefix, status, methods=["GET"])
        app.add_api_route(prefix + "/metadata", metadata, methods=["GET"])
        app.add_api_route(prefix + "/assets/{asset}", assets, methods=["GET"])
        app.add_api_route(prefix + ":predict", predict_route, methods=["POST"])


def _model_spec(request: Request) -> tuple[str, int | None, str | None]:
    """Model name, version (None: the highest) and version label of a request's path,
    checked as TF Serving's path regexes and ``absl::SimpleAtoi`` check them; the name and
    label percent-decoded after, as TF Serving's ``curl_easy_unescape`` decodes them."""
    params = request.path_params
    name, version, label = params["name"], params.get("version"), params.get("label")
    # TF Serving's names and labels exclude ':' (e.g. GET .../PlanetModel:predict); versions are digits.
    if ":" in name or ":" in (label or "") or (version is not None and not _DIGITS.fullmatch(version)):
        raise bad_request(f"Malformed request: {request.method} {request.url.path}")
    label = None if label is None else unquote(label)
    if version is None:
        return unquote(name), None, label
    significant = version.lstrip("0")
    if len(significant) > len(str(MAX_VERSION)) or int(significant or "0") > MAX_VERSION:
        raise bad_request(f"Failed to convert version: {version} to numeric.")
    return unquote(name), int(significant or "0"), label


class RawPathRouting:
    """ASGI middleware: routes match the path as sent, as TF Serving's regexes match it
    (``/v1/models/a%2Fb`` names model ``a/b``, not a path with one more segment); uvicorn's
    ``path`` is percent-decoded already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            scope = {**scope, "path": scope["raw_path"].decode("latin-1")}
        await self.app(scope, receive, send)


_DIGITS = re.compile(r"[0-9]+")


# --- running ------------------------------------------------------------------------------


def serve(app: FastAPI, sock: socket.socket, settings: ServeParams, verbose: bool = False) -> None:
    """Run ``app`` on the bound ``sock`` until SIGINT/SIGTERM, with the connection limits of
    ``settings`` (uvicorn's, plus a request-head timeout uvicorn lacks)."""
    config = uvicorn.Config(
        app,
        http=functools.partial(HeadTimeoutProtocol, head_timeout_s=settings.read_timeout_seconds),
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=settings.max_header_kb * 1024,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        log_level="info" if verbose else "warning",
        access_log=verbose,
    )
    uvicorn.Server(config).run(sockets=[sock])


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol that also closes a connection whose request head has not
    arrived ``head_timeout_s`` after the connection opened, or after the request's first
    byte on a kept-alive one.

    uvicorn times connections out only while idle between requests: a client that
    connects and sends nothing, or a header byte now and then, would hold its connection
    (and one of ``limit_concurrency``'s places) forever.

    A request answered before its body arrived (a route that reads none: status,
    metadata, an unknown path) must send the rest of its body within ``head_timeout_s``
    of the answer, and the next request head within ``head_timeout_s`` after that:
    uvicorn waits for such a body with no timeout (every byte of it cancels its
    keep-alive timeout) and arms none once it is in.
    """

    def __init__(self, *args: Any, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        self._answered_body_timer: asyncio.TimerHandle | None = None
        self._answered_cycle: object = None  # uvicorn's RequestResponseCycle answered before its body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
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

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._answered_cycle = self.cycle
            self._answered_body_timer = self.loop.call_later(
                self.head_timeout_s, self._answered_body_timed_out
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_answered_body_timer()
        super().connection_lost(exc)

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
                self.head_timeout_s,
            )
            self.transport.close()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection: no request head within %g s", self.head_timeout_s)
            self.transport.close()
