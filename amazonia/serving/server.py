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
  can turn outputs into tags without access to the model folder.

:class:`ModelRepository` does what TF Serving's file-system source does: it serves every
integer-named version folder holding a ``saved_model.pb`` that loads, the highest by
default, and polls for new ones every ``poll_seconds``. Unlike TF Serving's default
policy (latest version only) every loaded version stays reachable by URL.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import tensorflow as tf
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import error_codes_pb2, saved_model_pb2

from amazonia.common.errors import AmazoniaError
from amazonia.export.contract import (
    LABEL_MAP_ASSET,
    SAVED_MODEL_PB,
    SERVE_TAG,
    SIGNATURE_FLOAT,
    THRESHOLDS_ASSET,
    VERSION_DIR_RE,
    load_assets,
)
from amazonia.export.saved_model import tf_error_message
from amazonia.serving import rest
from amazonia.serving.rest import NOT_FOUND, PAYLOAD_TOO_LARGE, RestError, bad_request

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = SIGNATURE_FLOAT  # "serving_default", TF Serving's default signature key too
ASSETS = (LABEL_MAP_ASSET, THRESHOLDS_ASSET)
AVAILABLE, LOADING, END = "AVAILABLE", "LOADING", "END"  # TF Serving's ModelVersionStatus states
MIN_DRAIN_BYTES = 64 * 2**20
MAX_CALL_BATCH = 64  # instances per model call; larger requests are run in slices
MAX_IMAGE_PIXELS = 4096 * 4096
PREDICT_CONCURRENCY = max(4, 2 * (os.cpu_count() or 1))  # predictions running at once; others wait


# --- one version ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    function: Any  # a ConcreteFunction taking the inputs as keyword arguments
    inputs: Mapping[str, rest.TensorSpec]


@dataclass(frozen=True)
class LoadedVersion:
    """A version ready to serve; immutable, so requests can use it without locks."""

    version: int
    path: Path
    signature_defs: Mapping[str, Any]  # as the metadata endpoint shows them
    signatures: Mapping[str, Signature]
    assets: Mapping[str, Any]  # asset file name -> its JSON; empty when assets_error says why
    assets_error: str
    saved_model: Any = field(repr=False)  # owns the variables the functions read


@dataclass(frozen=True)
class LoadFailure:
    version: int
    fingerprint: tuple[int, ...]  # of saved_model.pb when it failed; a new file is tried again
    error_code: str
    message: str


class CorruptSavedModelError(AmazoniaError):
    """``saved_model.pb`` cannot be parsed: half-written or not a SavedModel."""

    error_code = "DATA_LOSS"


def read_signature_defs(saved_model_dir: Path) -> dict[str, Any]:
    """The ``serve`` meta graph's signature defs in TF Serving's metadata JSON layout."""
    pb = saved_model_dir / SAVED_MODEL_PB
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(pb.read_bytes())
    except DecodeError as err:
        raise CorruptSavedModelError(
            f"{pb}: not a readable SavedModel ({err}); written incompletely? export it again"
        ) from None
    for meta_graph in proto.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return {
                name: json_format.MessageToDict(
                    signature, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
                for name, signature in meta_graph.signature_def.items()
            }
    raise AmazoniaError(f"{pb}: no meta graph tagged '{SERVE_TAG}'; export it with that tag")


def load_version(path: Path, version: int) -> LoadedVersion:
    """Load and warm up one version folder; raises whatever loading raises."""
    started = time.perf_counter()
    signature_defs = read_signature_defs(path)
    saved_model = tf.saved_model.load(str(path), tags=[SERVE_TAG])
    signatures = {
        name: Signature(saved_model.signatures[name], rest.input_specs(definition))
        for name, definition in signature_defs.items()
        if name in saved_model.signatures  # not "__saved_model_init_op"
    }
    try:
        label_map, thresholds = load_assets(path)
        assets, assets_error = {LABEL_MAP_ASSET: label_map, THRESHOLDS_ASSET: thresholds}, ""
    except AmazoniaError as err:  # TF Serving needs no assets: serve the model without them
        assets, assets_error = {}, str(err)
        log.warning("version %d serves no assets: %s", version, err)
    _warm_up(version, signatures)
    log.info("loaded version %d from %s in %.1f s", version, path, time.perf_counter() - started)
    return LoadedVersion(version, path, signature_defs, signatures, assets, assets_error, saved_model)


def _warm_up(version: int, signatures: Mapping[str, Signature]) -> None:
    """Call every signature once: the first call of a loaded function is ~10x slower."""
    sample_image = tf.io.encode_png(tf.zeros((8, 8, 3), tf.uint8)).numpy()
    for name, signature in signatures.items():
        try:
            signature.function(**{k: _sample(spec, sample_image) for k, spec in signature.inputs.items()})
        except Exception as err:  # a model that fails on zeros may still serve real data
            log.warning("version %d: warm-up call of %s failed: %s", version, name, tf_error_message(err))


def _sample(spec: rest.TensorSpec, image: bytes) -> tf.Tensor:
    shape = [1 if d < 0 else d for d in spec.shape or (1,)]
    if spec.dtype == rest.DT_STRING:  # our string inputs are encoded images
        return tf.constant(np.full(shape, image, dtype=object))
    return tf.zeros(shape, tf.dtypes.as_dtype(types_pb2.DataType.Value(spec.dtype)))


def _error_code(err: Exception) -> str:
    """The canonical error code TF Serving would show for a failed load."""
    if isinstance(err, tf.errors.OpError):
        return error_codes_pb2.Code.Name(err.error_code)
    return getattr(err, "error_code", "UNKNOWN")


def _fingerprint(pb: Path) -> tuple[int, ...]:
    stat = pb.stat()
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


# --- all versions -------------------------------------------------------------------------


class ModelRepository:
    """The versions of one model under ``base_path``, reloaded by a polling thread.

    Readers take ``self._versions`` (a dict replaced, never changed) without locking;
    only :meth:`refresh` writes it, under ``self._lock``.
    """

    def __init__(self, base_path: Path | str, name: str, poll_seconds: float) -> None:
        self.base_path = Path(base_path)
        self.name = name
        self.poll_seconds = poll_seconds
        self._versions: dict[int, LoadedVersion] = {}
        self._failures: dict[int, LoadFailure] = {}
        self._loading: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def versions(self) -> Mapping[int, LoadedVersion]:
        """The loaded versions now (a snapshot)."""
        return self._versions

    def scan(self) -> dict[int, Path]:
        """Version folders that may be loaded: integer names holding a saved_model.pb.

        The smoke check publishes through ``.tmp-<version>.*`` and renames it when complete, so
        other names are skipped, as TF Serving skips them.
        """
        try:
            entries = list(self.base_path.iterdir())
        except OSError as err:
            raise AmazoniaError(f"cannot list {self.base_path}: {err.strerror}") from None
        return {
            int(entry.name): entry
            for entry in entries
            if VERSION_DIR_RE.fullmatch(entry.name) and (entry / SAVED_MODEL_PB).is_file()
        }

    def refresh(self) -> None:
        """Load new version folders (highest first), forget vanished ones."""
        try:
            found = self.scan()
        except AmazoniaError as err:  # a transient error must not unload what serves
            log.warning("%s; keeping the loaded versions", err)
            return
        with self._lock:
            self._versions = {v: m for v, m in self._versions.items() if v in found}
            self._failures = {v: f for v, f in self._failures.items() if v in found}
        for version in sorted(found, reverse=True):
            if version not in self._versions:
                self._try_load(version, found[version])

    def _try_load(self, version: int, path: Path) -> None:
        try:
            fingerprint = _fingerprint(path / SAVED_MODEL_PB)
        except OSError:
            return  # removed since the scan
        failed = self._failures.get(version)
        if failed is not None and failed.fingerprint == fingerprint:
            return
        self._loading = version
        try:
            loaded = load_version(path, version)
        except Exception as err:  # a bad folder must not stop the others
            message = (
                str(err) if isinstance(err, AmazoniaError) else f"cannot load {path}: {tf_error_message(err)}"
            )
            log.warning("%s; serving the other versions", message)
            with self._lock:
                self._failures = {
                    **self._failures,
                    version: LoadFailure(version, fingerprint, _error_code(err), message),
                }
            return
        finally:
            self._loading = None
        with self._lock:
            self._versions = {**self._versions, version: loaded}
            self._failures = {v: f for v, f in self._failures.items() if v != version}
        # A loaded model is hundreds of thousands of objects that are never garbage; left
        # to the collector, every full collection walks them all, a pause of 100+ ms that
        # lands on whichever request allocated last. Frozen, they are skipped.
        gc.freeze()

    def start(self) -> None:
        """Poll for new versions every ``poll_seconds`` in a daemon thread."""
        self._thread = threading.Thread(target=self._poll, name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # keep polling; the next round may succeed
                log.exception("polling %s failed", self.base_path)

    def get(self, name: str, version: int | None) -> LoadedVersion:
        """The version to serve (highest if ``None``), or TF Serving's 404."""
        versions = self._versions
        if version is None:
            if name == self.name and versions:
                return versions[max(versions)]
            raise RestError(NOT_FOUND, f"Servable not found for request: Latest({name})")
        if name == self.name and version in versions:
            return versions[version]
        raise RestError(NOT_FOUND, f"Servable not found for request: Specific({name}, {version})")

    def status(self, name: str, version: int | None) -> list[dict]:
        """``model_version_status`` entries, highest version first, as TF Serving lists them.

        A version whose load failed is listed as ``END`` with the error, as TF Serving
        does; it is never served.
        """
        entries: dict[int, dict] = {}
        if name == self.name:
            for failure in self._failures.values():
                entries[failure.version] = rest.version_status(
                    failure.version, END, failure.error_code, failure.message
                )
            entries.update({v: rest.version_status(v, AVAILABLE) for v in self._versions})
            loading = self._loading
            if loading is not None:
                entries[loading] = rest.version_status(loading, LOADING)
        if version is not None:
            if version not in entries:
                raise RestError(NOT_FOUND, f"Could not find version {version} of model {name}")
            return [entries[version]]
        if not entries:
            raise RestError(NOT_FOUND, f"Could not find any versions of model {name}")
        return [entries[v] for v in sorted(entries, reverse=True)]


# --- requests -----------------------------------------------------------------------------


def predict(repository: ModelRepository, name: str, version: int | None, body: bytes) -> bytes:
    """Answer one ``:predict`` body with TF Serving's JSON; blocking, run it in a thread."""
    request = rest.parse_predict_request(body, DEFAULT_SIGNATURE)
    model = repository.get(name, version)
    signature = model.signatures.get(request.signature_name)
    if signature is None:
        raise bad_request(f'Serving signature name: "{request.signature_name}" not found in signature def')
    try:
        tensors = rest.request_tensors(request, signature.inputs)
    except RecursionError:
        raise bad_request("JSON Parse error: The document is nested too deeply") from None
    _check_image_sizes(tensors)
    try:
        outputs = run_signature(signature, tensors)
    except (tf.errors.OpError, ValueError, TypeError) as err:
        # TF Serving answers what the model refuses (undecodable image bytes...) with 400.
        raise bad_request(tf_error_message(err)) from None
    return rest.dumps(rest.predict_response(outputs, request.row_format))


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
    """Refuse images that would decode to more than MAX_IMAGE_PIXELS (decompression bombs):
    a few KB of PNG can decode to gigabytes. Strings that are no image are left to the model."""
    for name, array in tensors.items():
        if array.dtype != object:
            continue
        for data in array.flat:
            try:
                with Image.open(io.BytesIO(data)) as image:  # reads the header only
                    width, height = image.size
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
            if width * height > MAX_IMAGE_PIXELS:
                raise bad_request(
                    f"input '{name}': an image of {width}x{height} pixels; at most {MAX_IMAGE_PIXELS:,} "
                    "pixels are decoded (the model resizes to its input size anyway): shrink it first"
                )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 once it passes ``limit`` bytes (declared or streamed).

    A refused body is still read (not kept) up to a bound, so that the client, which is
    busy sending, is not reset before it can read the 413.
    """
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else 0
    too_large = size > limit
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
        raise RestError(
            PAYLOAD_TOO_LARGE,
            f"Request body of {max(size, received)} bytes is larger than this server's limit of {limit} "
            "bytes (serve.max_body_mb, --max-body-mb); send fewer instances per request",
        )
    return b"".join(chunks)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(content=rest.dumps(obj), status_code=status, media_type="application/json")


def _malformed(request: Request) -> Response:
    # What TF Serving answers for any /v1/ path it does not know.
    return _json(rest.error_body(f"Malformed request: {request.method} {request.url.path}"), 400)


def create_app(
    model_base_path: Path | str,
    model_name: str,
    poll_seconds: float = 2.0,
    max_body_bytes: int = 32 * 2**20,
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
    _add_error_handlers(app)
    _add_routes(app, repository, max_body_bytes)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RestError)
    async def rest_error(request: Request, err: RestError) -> Response:
        return _json(rest.error_body(err.message), err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/v1/") and err.status_code in (404, 405):
            return _malformed(request)
        return _json(rest.error_body(str(err.detail)), err.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> Response:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return _json(rest.error_body(f"internal error: {type(err).__name__}: {err}"), 500)


def _add_routes(app: FastAPI, repository: ModelRepository, max_body_bytes: int) -> None:
    # Parsing is GIL-bound and inference uses every core, so more predictions at once
    # than this only add memory (a 32 MB body parses to ~300 MB of Python objects).
    predictions = anyio.CapacityLimiter(PREDICT_CONCURRENCY)

    async def status(request: Request) -> Response:
        name, version = _model_spec(request)
        return _json(rest.status_response(repository.status(name, version)))

    async def metadata(request: Request) -> Response:
        name, version = _model_spec(request)
        model = repository.get(name, version)
        return _json(rest.metadata_response(name, model.version, model.signature_defs))

    async def assets(request: Request) -> Response:
        name, version = _model_spec(request)
        model = repository.get(name, version)
        asset = request.path_params["asset"]
        if asset not in ASSETS:
            raise RestError(
                NOT_FOUND,
                f"no asset {asset!r}: this endpoint (amazonia's extension) serves {', '.join(ASSETS)}",
            )
        if asset not in model.assets:
            raise RestError(NOT_FOUND, model.assets_error)
        return _json(model.assets[asset])

    async def predict_route(request: Request) -> Response:
        name, version = _model_spec(request)
        body = await read_body(request, max_body_bytes)
        answer = await anyio.to_thread.run_sync(predict, repository, name, version, body, limiter=predictions)
        return Response(content=answer, media_type="application/json")

    # Handlers read request.path_params, so FastAPI adds no query or body parameters.
    for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version:int}"):
        app.add_api_route(prefix, status, methods=["GET"])
        app.add_api_route(prefix + "/metadata", metadata, methods=["GET"])
        app.add_api_route(prefix + "/assets/{asset}", assets, methods=["GET"])
        app.add_api_route(prefix + ":predict", predict_route, methods=["POST"])


def _model_spec(request: Request) -> tuple[str, int | None]:
    """Model name and version (None: the highest) of a request's path."""
    name = request.path_params["name"]
    if ":" in name:  # TF Serving's names exclude ':', e.g. GET .../PlanetModel:predict
        raise RestError(400, f"Malformed request: {request.method} {request.url.path}")
    return name, request.path_params.get("version")
