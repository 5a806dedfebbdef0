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
* ``.../labels/<label>`` in place of ``/versions/<n>``: TF Serving's version labels, set
  in a model config file; an unknown label is TF Serving's 400 (``Unrecognized
  servable version label``), but for the status, which TF Serving answers ignoring the
  label;
* ``GET /monitoring/prometheus/metrics``: TF Serving's Prometheus metrics
  (:mod:`amazonia.serving.metrics`).

Paths are matched as sent, as TF Serving's regexes match them, and the model name and
label percent-decoded after (``%2F`` is part of a name, not a ``/``).

Which models and versions are served, under which labels, and how they are reloaded, is
:class:`amazonia.serving.manager.ModelManager`'s business.

Hostile or unlucky clients are bounded (``serve.*`` in params.yaml,
:class:`amazonia.serving.params.ServeParams`): connections by
:mod:`amazonia.serving.protocol` (read and write timeouts, unsent answer bytes, head
size, framing); request bodies here, as sent and gunzipped; the work of a request by
:mod:`amazonia.serving.budgets` (instances, decoded pixels, decoding at once), per batch too
when concurrent requests share model calls (:mod:`amazonia.serving.batching`, off by default). No path is
redirected: what is not a route is TF Serving's error. Every request error is a 4xx with
TF Serving's ``{"error": ...}`` body and no path of the server's file system; a 500 means
a fault of the server, logged with its traceback; a request cut off by shutdown is 503.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import anyio
import anyio.to_thread
import numpy as np
import tensorflow as tf
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from amazonia.export.contract import (
    LABEL_MAP_ASSET,
    SIGNATURE_FLOAT,
    THRESHOLDS_ASSET,
    VERSION_DIR_RE,
    parse_version,
)
from amazonia.export.saved_model import tf_error_message
from amazonia.serving import batching, budgets, rest
from amazonia.serving.batching_parameters import load_batching_parameters
from amazonia.serving.manager import ModelManager
from amazonia.serving.metrics import CONTENT_TYPE, METRICS_PATH, ServingMetrics
from amazonia.serving.params import ServeParams
from amazonia.serving.protocol import BoundedH11Protocol, ConnectionLimits
from amazonia.serving.repository import LoadedVersion, Signature
from amazonia.serving.rest import NOT_FOUND, PAYLOAD_TOO_LARGE, REQUEST_TIMEOUT, RestError, bad_request

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = SIGNATURE_FLOAT  # "serving_default", TF Serving's default signature key too
ASSETS = (LABEL_MAP_ASSET, THRESHOLDS_ASSET)
MIN_DRAIN_BYTES = 64 * 2**20
# Requests parsed at once, and light model calls (no images, or few pixels) at once: parsing
# is GIL-bound and inference uses every core, so more only add memory (a 32 MB body parses
# to ~300 MB of Python objects). Heavier calls are the DecodeScheduler's.
PREDICT_CONCURRENCY = max(4, 2 * (os.cpu_count() or 1))
INTERNAL_SERVER_ERROR = 500
SERVICE_UNAVAILABLE = 503
CLOSE = {"connection": "close"}  # on answers sent before the body was read to its end


# --- requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictJob:
    """A ``:predict`` request read and checked, ready for the model."""

    signature: Signature
    tensors: Mapping[str, np.ndarray]
    row_format: bool
    pixels: list[int]  # decoded pixels of each instance's images (budgets.instance_pixels)
    model_name: str
    version: int
    signature_name: str


def prepare_predict(
    repository: ModelManager,
    name: str,
    version: int | None,
    body: bytes,
    limits: budgets.RequestLimits,
    label: str | None = None,
) -> PredictJob:
    """Read one ``:predict`` body into tensors for the model; blocking, run it in a thread.

    Checks come in TF Serving's order: the body is parsed, the model and signature are
    looked up (an unknown model is 404 whatever the body holds), then the tensors are
    read; then this server's budgets, before anything is decoded.
    """
    request = rest.parse_predict_request(body, DEFAULT_SIGNATURE)
    model = servable(repository, name, version, label)
    signature = model.signatures.get(request.signature_name)
    if signature is None:
        raise bad_request(
            f'Serving signature name: "{rest.echo(request.signature_name)}" not found in signature def'
        )
    tensors = rest.request_tensors(request, signature.inputs)
    budgets.check_instances(tensors, limits)
    pixels = budgets.instance_pixels(tensors, limits)
    return PredictJob(
        signature, tensors, request.row_format, pixels, name, model.version, request.signature_name
    )


def servable(repository: ModelManager, name: str, version: int | None, label: str | None) -> LoadedVersion:
    """The loaded version a request names: by ``label``, by ``version``, else the highest."""
    return repository.get(name, version, label)


async def run_model(
    job: PredictJob, decoder: budgets.DecodeScheduler, light_calls: anyio.CapacityLimiter
) -> dict[str, np.ndarray]:
    """The signature's outputs for ``job``, called on slices (budgets.call_slices): the
    answer is the same as in one call, but memory is bounded, and a heavy request takes
    turns with the others at the decode scheduler."""
    if budgets.batch_size(job.tensors) is None:  # scalars, or inputs of different lengths: as they are
        slices = [(0, 0, sum(job.pixels))]
        whole = True
    else:
        slices = budgets.call_slices(job.pixels)
        whole = len(slices) == 1
    parts = []
    for start, stop, pixels in slices:
        tensors = job.tensors if whole else {k: v[start:stop] for k, v in job.tensors.items()}
        if pixels > budgets.LIGHT_CALL_PIXELS:
            async with decoder.slot(pixels):
                parts.append(await anyio.to_thread.run_sync(call_signature, job.signature, tensors))
        else:
            parts.append(
                await anyio.to_thread.run_sync(call_signature, job.signature, tensors, limiter=light_calls)
            )
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


async def predict_outputs(
    job: PredictJob,
    decoder: budgets.DecodeScheduler,
    light_calls: anyio.CapacityLimiter,
    batcher: batching.BatchScheduler | None,
) -> dict[str, np.ndarray]:
    """The signature's outputs for ``job``: with server-side batching on, called in batches
    with other requests for the same signature of the same version; on its own otherwise,
    and for what is not batched (inputs without a common batch dimension, or decoding more
    than budgets.MAX_BATCH_PIXELS: those take their decode turns as without batching)."""
    if batcher is None:
        return await run_model(job, decoder, light_calls)
    rows = budgets.batch_size(job.tensors)
    if rows is not None:
        batcher.check_size(rows)
    if not rows or sum(job.pixels) > budgets.MAX_BATCH_PIXELS:
        return await run_model(job, decoder, light_calls)
    # One queue per signature object (a reloaded version has new ones) and input shape.
    key = (
        id(job.signature),
        tuple((name, array.dtype.str, array.shape[1:]) for name, array in job.tensors.items()),
    )
    label = f"{job.model_name} version {job.version} {job.signature_name}"
    return await batcher.run(
        key, label, functools.partial(call_signature, job.signature), job.tensors, job.pixels
    )


def call_signature(signature: Signature, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One model call; blocking. What the model refuses (undecodable image bytes...) is
    400, as TF Serving answers it."""
    try:
        outputs = signature.function(**{k: tf.constant(v) for k, v in tensors.items()})
        return {name: tensor.numpy() for name, tensor in outputs.items()}
    except (tf.errors.OpError, ValueError, TypeError) as err:
        raise bad_request(tf_error_message(err)) from None


def predict_answer(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """TF Serving's JSON answer to a prediction; blocking (a 1,024-instance answer takes ms)."""
    return rest.predict_response(outputs, row_format)


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
    busy sending, is not reset before it can read the 413; past it, the connection's
    lingering close (:mod:`amazonia.serving.protocol`) reads on, within its own bounds.
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
    return _json(rest.error_body(f"Malformed request: {request.method} {rest.echo(request.url.path)}"), 400)


def create_app(repository: ModelManager, settings: ServeParams) -> FastAPI:
    """The TF Serving-compatible app serving the models of ``repository`` (loaded: see
    :meth:`ModelManager.load`) with the limits of ``settings``; their folders, and the
    model config file, are polled while it runs."""
    batching_parameters = load_batching_parameters(settings)
    batcher = batching.BatchScheduler(batching_parameters) if batching_parameters is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        repository.start()
        try:
            yield
        finally:
            await run_in_threadpool(repository.stop)
            if batcher is not None:
                batcher.close()

    # redirect_slashes=False: Starlette answers a path with a trailing slash by a redirect
    # to a Location built from the request's Host header; TF Serving has no redirects.
    app = FastAPI(
        title="amazonia serve",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    app.state.repository = repository
    app.state.batcher = batcher
    app.add_middleware(RawPathRouting)
    _add_error_handlers(app)
    _add_routes(app, repository, settings, batcher)
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
        # The exception's text may hold server paths: the log has it, the client its type.
        return _json(rest.error_body(f"internal error ({type(err).__name__}); see the server's log"), 500)


def _add_routes(
    app: FastAPI, repository: ModelManager, settings: ServeParams, batcher: batching.BatchScheduler | None
) -> None:
    parsing = anyio.CapacityLimiter(PREDICT_CONCURRENCY)
    light_calls = anyio.CapacityLimiter(PREDICT_CONCURRENCY)
    decoder = budgets.DecodeScheduler(settings.decode_concurrency)
    limits = budgets.RequestLimits(settings.max_instances, settings.max_request_pixels)

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
                f"no asset {rest.echo(asset)!r}: this endpoint (amazonia's extension) serves "
                + ", ".join(ASSETS),
            )
        if asset not in model.assets:
            raise RestError(NOT_FOUND, model.assets_error)
        return _json(model.assets[asset])

    async def predict_route(request: Request) -> Response:
        name, version, label = _model_spec(request)
        body = await read_body(request, settings.max_body_bytes, settings.read_timeout_seconds)
        job = await anyio.to_thread.run_sync(
            prepare_predict, repository, name, version, body, limits, label, limiter=parsing
        )
        request.state.signature = job.signature  # for the metrics (_measured)
        outputs = await predict_outputs(job, decoder, light_calls, batcher)
        answer = await anyio.to_thread.run_sync(predict_answer, outputs, job.row_format)
        return Response(content=answer, media_type="application/json")

    metrics = repository.metrics or ServingMetrics()
    if batcher is not None:
        metrics.watch_batching(lambda: batcher.stats)

    async def metrics_page(request: Request) -> Response:
        return Response(content=metrics.exposition(), media_type=CONTENT_TYPE)

    # Handlers read request.path_params, so FastAPI adds no query or body parameters.
    async def no_model_name(request: Request) -> Response:
        raise bad_request("Missing model name in request.")

    app.add_api_route(METRICS_PATH, metrics_page, methods=["GET"])
    app.add_api_route("/v1/models", no_model_name, methods=["GET"])
    for prefix in (
        "/v1/models/{name}",
        "/v1/models/{name}/versions/{version}",
        "/v1/models/{name}/labels/{label}",
    ):
        app.add_api_route(prefix, status, methods=["GET"])
        app.add_api_route(prefix + "/metadata", metadata, methods=["GET"])
        app.add_api_route(prefix + "/assets/{asset}", assets, methods=["GET"])
        app.add_api_route(
            prefix + ":predict", _measured(predict_route, repository, metrics), methods=["POST"]
        )


def _measured(
    handler: Callable[[Request], Awaitable[Response]], repository: ModelManager, metrics: ServingMetrics
) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` (``:predict``), recording each request in ``metrics`` whatever its end:
    the model (if served), the version and signature that answered (if it got that far:
    ``request.state.signature``), the status and the time."""

    async def measured(request: Request) -> Response:
        started = time.perf_counter()
        status: int | None = INTERNAL_SERVER_ERROR
        try:
            response = await handler(request)
            status = response.status_code
            return response
        except RestError as err:
            status = err.status
            raise
        except asyncio.CancelledError:
            status = None
            raise
        finally:
            name = unquote(request.path_params["name"])
            signature: Signature | None = getattr(request.state, "signature", None)
            metrics.record_predict(
                name if repository.serves(name) else "",
                signature.version if signature is not None else None,
                signature.name if signature is not None else None,
                status,
                time.perf_counter() - started,
            )

    return measured


def _model_spec(request: Request) -> tuple[str, int | None, str | None]:
    """Model name, version (None: the highest) and version label of a request's path,
    checked as TF Serving's path regexes and ``absl::SimpleAtoi`` check them; the name and
    label percent-decoded after, as TF Serving's ``curl_easy_unescape`` decodes them."""
    params = request.path_params
    name, version, label = params["name"], params.get("version"), params.get("label")
    # TF Serving's names and labels exclude ':' (e.g. GET .../PlanetModel:predict); versions
    # are ASCII digits.
    if ":" in name or ":" in (label or "") or (version is not None and not VERSION_DIR_RE.fullmatch(version)):
        raise bad_request(f"Malformed request: {request.method} {rest.echo(request.url.path)}")
    label = None if label is None else unquote(label)
    if version is None:
        return unquote(name), None, label
    number = parse_version(version)
    if number is None:
        raise bad_request(f"Failed to convert version: {rest.echo(version)} to numeric.")
    return unquote(name), number, label


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


# --- running ------------------------------------------------------------------------------


def serve(app: FastAPI, sock: socket.socket, settings: ServeParams, verbose: bool = False) -> None:
    """Run ``app`` on the bound ``sock`` until SIGINT/SIGTERM, with the connection limits of
    ``settings`` (uvicorn's, and :mod:`amazonia.serving.protocol`'s)."""
    limits = ConnectionLimits(
        read_timeout_s=settings.read_timeout_seconds,
        write_timeout_s=settings.write_timeout_seconds,
        max_head_bytes=settings.max_header_kb * 1024,
        max_unsent_bytes=settings.max_unsent_kb * 1024,
    )
    shutdown = CutOffAtShutdown(app, settings.graceful_shutdown_seconds)
    config = uvicorn.Config(
        shutdown,
        http=lambda *args, **kwargs: BoundedH11Protocol(*args, limits=limits, **kwargs),
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=limits.max_head_bytes,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        log_level="info" if verbose else "warning",
        access_log=verbose,
    )
    server = uvicorn.Server(config)
    shutdown.server = server
    server.run(sockets=[sock])


class CutOffAtShutdown:
    """ASGI wrapper: a request still running when uvicorn stops waiting for it on SIGTERM
    (``serve.graceful_shutdown_seconds``) is answered 503 with TF Serving's JSON error,
    and ends without a traceback.

    uvicorn cancels such a request's task: left alone, the cancellation reaches uvicorn,
    which logs it as an application error and answers 500.
    """

    def __init__(self, app: ASGIApp, grace_s: float) -> None:
        self.app = app
        self.grace_s = grace_s
        self.server: uvicorn.Server | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except asyncio.CancelledError:
            if scope["type"] != "http" or self.server is None or not self.server.should_exit:
                raise
            log.warning(
                "%s %s cut off: still running %g s after shutdown began (serve.graceful_shutdown_seconds)",
                scope["method"],
                rest.echo(scope["path"]),
                self.grace_s,
            )
            if not started:
                body = rest.dumps(
                    rest.error_body(
                        "the server is shutting down and this request did not finish within "
                        f"{self.grace_s:g} s (serve.graceful_shutdown_seconds); send it again"
                    )
                )
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": SERVICE_UNAVAILABLE, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            # Not re-raised: uvicorn cancelled the task to end it, and it ends here.
