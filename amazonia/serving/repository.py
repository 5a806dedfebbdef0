"""The versions of one model under ``models/<name>/``: loaded, reloaded and unloaded as TF Serving does.

TF Serving's file-system source polls the base path for integer-named version folders and
hands them to its ``AspiredVersionsManager``, whose default ``AvailabilityPreservingPolicy``
loads a new version before it unloads an old one; a failed load is retried
(``--max_num_load_retries``, ``--load_retry_interval_micros``). :class:`ModelRepository`
does the same for ``amazonia serve``, with these choices:

* version folders are named as TF Serving reads them: ASCII digits within int64
  (:func:`amazonia.export.contract.parse_version`); a ``saved_model.pb`` over
  ``serve.max_saved_model_mb`` is refused unread;
* which version folders are served is a version policy (TF Serving's
  ``model_version_policy``, :class:`amazonia.serving.model_config.VersionPolicy`): all of
  them without a model config file (TF Serving's default serves the latest only), the
  config's otherwise; the highest served is served by default. A version the policy
  drops is unloaded once a version it keeps is served (availability first);
* a version answers only once warmed up: the requests of its
  ``assets.extra/tf_serving_warmup_requests`` replayed as TF Serving replays them, a
  broken file failing the load (:func:`replay_warmup`);
* a folder is loaded once it has not changed for one poll, so that a copy in progress
  (``cp -r``, ``dvc pull``: ``saved_model.pb`` before ``variables/``) is left alone; at
  startup, what is there is loaded at once; a poll looks at a bounded number of entries
  per version (:func:`folder_fingerprint`), however many files it holds;
* loads come before unloads: a new or replacing folder is loaded while the old version
  serves, then swapped in; a version is never unloaded to make room;
* a failed load is retried at once when its folder changes, and otherwise up to
  :data:`MAX_NUM_LOAD_RETRIES` times, one poll apart at first, then doubling;
* a folder replaced under a served version (a re-export, ``dvc checkout``) is loaded and
  swapped in; TF Serving treats a version as immutable and would keep the old one;
* a served version whose folder disappears is served on for
  :data:`MISSING_FOLDER_GRACE_S` (it may be being replaced: ``dvc checkout`` and
  ``dvc pull`` delete a folder before restoring it), then unloaded, unless it is the last
  one served while another folder waits to load. TF Serving unloads it at the next poll,
  with the same exception;
* memory stays flat across reloads: the process's objects are frozen out of garbage
  collection once, before any model loads, and each reload ends with a collection
  (:func:`_freeze_heap`).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import error_codes_pb2, saved_model_pb2

from amazonia.common.errors import AmazoniaError
from amazonia.export.contract import (
    LABEL_MAP_ASSET,
    SAVED_MODEL_PB,
    SERVE_TAG,
    THRESHOLDS_ASSET,
    load_assets,
    parse_version,
)
from amazonia.export.saved_model import tf_error_message
from amazonia.export.warmup import WARMUP_FILE, WarmupFileError, read_warmup_requests, warmup_requests_path
from amazonia.serving import rest
from amazonia.serving.metrics import ServingMetrics, WarmupRun
from amazonia.serving.model_config import ALL_VERSIONS, VersionPolicy
from amazonia.serving.rest import NOT_FOUND, RestError

log = logging.getLogger(__name__)

AVAILABLE, LOADING, END = "AVAILABLE", "LOADING", "END"  # TF Serving's ModelVersionStatus states
# TF Serving's --max_num_load_retries default. Its --load_retry_interval_micros waits a fixed
# minute between tries; ours start one poll after a failure and double up to that minute, as
# the usual failure here is a folder still being written, complete seconds later.
MAX_NUM_LOAD_RETRIES = 5
MAX_LOAD_RETRY_INTERVAL_S = 60.0
# Long enough for DVC or a copy to put a deleted version folder back, short enough that a
# version deleted on purpose is gone within a minute.
MISSING_FOLDER_GRACE_S = 60.0

# Entries of a version folder a poll looks at (breadth first, the folder itself included):
# enough for a SavedModel's files (saved_model.pb, fingerprint.pb, variables/ and its
# shards, assets/, assets.extra/), while a folder of 100,000 files costs a poll no more.
MAX_FINGERPRINT_ENTRIES = 64
DEFAULT_MAX_SAVED_MODEL_BYTES = 256 * 2**20

Fingerprint = tuple[tuple[str, int, int, int], ...]  # (path, inode, size, mtime_ns) of each entry


# --- one version ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """A signature of a loaded version: its function, and what answers name it by."""

    function: Any  # a ConcreteFunction taking the inputs as keyword arguments
    inputs: Mapping[str, rest.TensorSpec]
    name: str = ""
    version: int = 0


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
    warmup: WarmupRun | None = None  # the warmup file's replay; None: the version has none


@dataclass(frozen=True)
class LoadFailure:
    """The last failed load of a version folder, and when to try it again."""

    version: int
    fingerprint: Fingerprint  # of the folder when it failed; a changed folder is tried again
    error_code: str
    message: str  # the error, and whether and when it is retried: what the status shows
    attempts: int  # failed loads of this very folder content
    retry_at: float | None  # time.monotonic() of the next retry; None: only once the folder changes


class CorruptSavedModelError(AmazoniaError):
    """``saved_model.pb`` cannot be parsed: half-written or not a SavedModel."""

    error_code = "DATA_LOSS"


class SavedModelTooLargeError(AmazoniaError):
    """``saved_model.pb`` is larger than the server reads."""

    error_code = "RESOURCE_EXHAUSTED"


class WarmupError(AmazoniaError):
    """The warmup file's requests could not all be replayed: the version is not served."""

    def __init__(self, message: str, error_code: str, run: WarmupRun) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.run = run


def read_signature_defs(
    saved_model_dir: Path, max_bytes: int = DEFAULT_MAX_SAVED_MODEL_BYTES
) -> dict[str, Any]:
    """The ``serve`` meta graph's signature defs in TF Serving's metadata JSON layout.

    A ``saved_model.pb`` over ``max_bytes`` is refused unread: a sparse file of a few
    blocks on disk can claim gigabytes, which reading and parsing would hold in memory
    at every retry. Messages name files relative to the version folder.
    """
    pb = saved_model_dir / SAVED_MODEL_PB
    size = pb.stat().st_size
    if size > max_bytes:
        raise SavedModelTooLargeError(
            f"{SAVED_MODEL_PB} is {size:,} bytes, more than this server's limit of {max_bytes:,} "
            "(serve.max_saved_model_mb); not read. Export the model again, or raise the limit"
        )
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(pb.read_bytes())
    except DecodeError as err:
        raise CorruptSavedModelError(
            f"{SAVED_MODEL_PB}: not a readable SavedModel ({err}); written incompletely? export it again"
        ) from None
    for meta_graph in proto.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return {
                name: json_format.MessageToDict(
                    signature, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
                for name, signature in meta_graph.signature_def.items()
            }
    raise AmazoniaError(f"{SAVED_MODEL_PB}: no meta graph tagged '{SERVE_TAG}'; export it with that tag")


def load_version(
    path: Path, version: int, max_saved_model_bytes: int = DEFAULT_MAX_SAVED_MODEL_BYTES
) -> LoadedVersion:
    """Load and warm up one version folder; raises whatever loading raises (a failed
    warmup: :class:`WarmupError`)."""
    started = time.perf_counter()
    signature_defs = read_signature_defs(path, max_saved_model_bytes)
    saved_model = tf.saved_model.load(str(path), tags=[SERVE_TAG])
    signatures = {
        name: Signature(saved_model.signatures[name], rest.input_specs(definition), name, version)
        for name, definition in signature_defs.items()
        if name in saved_model.signatures  # not "__saved_model_init_op"
    }
    try:
        label_map, thresholds = load_assets(path)
        assets, assets_error = {LABEL_MAP_ASSET: label_map, THRESHOLDS_ASSET: thresholds}, ""
    except AmazoniaError as err:  # TF Serving needs no assets: serve the model without them
        assets, assets_error = {}, f"version {version}: {without_server_paths(str(err), path)}"
        log.warning("version %d serves no assets: %s", version, err)
    warmup = replay_warmup(path, signatures)
    if warmup is None:
        _warm_up(version, signatures)
    else:
        log.info(
            "version %d: replayed %d warmup requests in %.2f s", version, warmup.requests, warmup.seconds
        )
    log.info("loaded version %d from %s in %.1f s", version, path, time.perf_counter() - started)
    return LoadedVersion(version, path, signature_defs, signatures, assets, assets_error, saved_model, warmup)


def without_server_paths(message: str, version_dir: Path) -> str:
    """``message`` with no path of this server's file system: paths in the version folder
    become relative to it (``variables/variables.index``), any other absolute path is cut
    to its last part. Answers name the version and its files, never where they are kept."""
    for root in sorted({str(version_dir), os.path.realpath(version_dir)}, key=len, reverse=True):
        message = message.replace(root + os.sep, "").replace(root, ".")
    return _ABSOLUTE_PATH.sub(lambda match: match.group(1) + ".../" + match.group(2), message)


# An absolute path: a '/' opening a word, then at least one more folder.
_ABSOLUTE_PATH = re.compile(r"(^|[\s'\"(\[{=:,])/(?:[^\s'\"/]+/)+([^\s'\"/]*)")


def replay_warmup(version_dir: Path, signatures: Mapping[str, Signature]) -> WarmupRun | None:
    """Replay the version's warmup file, if it has one, as TF Serving does before a
    version answers: each predict request once, in file order, through the signature it
    names (``serving_default`` if none). None without a file.

    Raises:
        WarmupError: the file is not TF Serving's format (``DATA_LOSS``,
            ``INVALID_ARGUMENT``; :func:`amazonia.export.warmup.read_warmup_requests`), or a
            request names no signature of the model, or inputs it refuses.
    """
    if not warmup_requests_path(version_dir).is_file():
        return None
    started = time.perf_counter()
    replayed = 0
    try:
        for request in read_warmup_requests(version_dir):
            _replay_request(request.signature_name, request.inputs, signatures, replayed)
            replayed += 1
    except WarmupFileError as err:
        run = WarmupRun(err.error_code, replayed, time.perf_counter() - started)
        raise WarmupError(f"warmup failed: {err}", err.error_code, run) from None
    return WarmupRun("OK", replayed, time.perf_counter() - started)


def _replay_request(
    signature_name: str, inputs: Mapping[str, np.ndarray], signatures: Mapping[str, Signature], index: int
) -> None:
    where = f"request {index} of {WARMUP_FILE}"
    signature = signatures.get(signature_name)
    if signature is None:
        raise WarmupFileError(
            f'{where}: Serving signature name: "{signature_name}" not found in signature def '
            f"(the model has {', '.join(sorted(signatures))})"
        )
    if set(inputs) != set(signature.inputs):
        raise WarmupFileError(
            f"{where}: inputs {sorted(inputs)} do not match signature {signature_name}'s "
            f"{sorted(signature.inputs)}"
        )
    try:
        signature.function(**{name: tf.constant(value) for name, value in inputs.items()})
    except (tf.errors.OpError, ValueError, TypeError) as err:
        code = _error_code(err) if isinstance(err, tf.errors.OpError) else "INVALID_ARGUMENT"
        raise WarmupFileError(f"{where}: {tf_error_message(err)}", code) from None


def _warm_up(version: int, signatures: Mapping[str, Signature]) -> None:
    """Without a warmup file, call every signature once on a tiny sample: the first call
    of a loaded function is ~10x slower, and a sample costs milliseconds."""
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


@functools.cache  # once per process, by the first refresh of any repository
def _freeze_heap() -> None:
    """Take what the process holds before any model loads out of garbage collection,
    once per process: later, it would freeze loaded models too.

    TensorFlow's and the server's modules are ~380,000 objects that are never garbage; left
    to the collector, every full collection walks them all, a pause of 300+ ms on a busy
    machine that lands on whichever request allocated last. Frozen (``gc.freeze``), they
    are skipped. A loaded model is only ~7,000 objects and stays collectable: frozen, an
    unloaded version, held in reference cycles, would stay in memory for good.
    """
    gc.collect()
    gc.freeze()


def folder_fingerprint(path: Path) -> Fingerprint:
    """What identifies a version folder's content: the folder itself, the files a load
    reads first, and its first entries breadth first (``variables/`` before other
    folders), :data:`MAX_FINGERPRINT_ENTRIES` in all.

    Stats, not checksums: polled every few seconds for every version, at a cost that does
    not grow with the folder's file count (TF Serving only lists the model's folder; it
    never looks into a version again). A re-published version is a new folder (a new
    inode), and a copy in progress adds entries or grows the files seen; a change beyond
    them is found by a load that fails and is retried. Symbolic links are not followed (a
    DVC ``symlink`` cache): a target that appears later is found by a retry too.
    """
    entries: dict[str, tuple[str, int, int, int]] = {}

    def add(name: str, stat: os.stat_result) -> None:
        entries[name] = (name, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    for name in (".", *_LOADED_FIRST):
        try:
            add(name, os.lstat(os.path.join(path, name)))
        except OSError:  # not there (yet)
            continue
    if "." not in entries:
        return ()
    folders = [(str(path), "")]
    while folders and len(entries) < MAX_FINGERPRINT_ENTRIES:
        folder, prefix = folders.pop(0)
        found = []
        try:
            with os.scandir(folder) as listing:
                for entry in listing:
                    if len(entries) >= MAX_FINGERPRINT_ENTRIES:
                        break
                    name = prefix + entry.name
                    try:
                        add(name, entry.stat(follow_symlinks=False))
                    except OSError:  # deleted meanwhile
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        found.append((entry.path, name + "/"))
        except OSError:  # a folder deleted meanwhile: skipped
            continue
        folders.extend(sorted(found, key=lambda item: item[1] != _VARIABLES))
    return tuple(sorted(entries.values()))


_VARIABLES = "variables/"
# What tf.saved_model.load reads first: seen whatever else the folder holds.
_LOADED_FIRST = (SAVED_MODEL_PB, "fingerprint.pb", "variables")


# --- all versions -------------------------------------------------------------------------


class ModelRepository:
    """The versions of one model under ``base_path``, reloaded by a polling thread (policy:
    the module docstring).

    Readers take ``self._versions`` and ``self._failures`` (dicts replaced, never changed)
    without locking; only :meth:`refresh`, in one thread at a time, writes them, under
    ``self._lock``. Its other state is its own.
    """

    def __init__(
        self,
        base_path: Path | str,
        name: str,
        poll_seconds: float,
        *,
        max_num_load_retries: int = MAX_NUM_LOAD_RETRIES,
        missing_folder_grace_s: float = MISSING_FOLDER_GRACE_S,
        max_saved_model_bytes: int = DEFAULT_MAX_SAVED_MODEL_BYTES,
        policy: VersionPolicy = ALL_VERSIONS,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.base_path = Path(base_path)
        self.max_saved_model_bytes = max_saved_model_bytes
        self.name = name
        self.policy = policy  # replaced when a model config file changes it; read at each poll
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.max_num_load_retries = max_num_load_retries
        self.missing_folder_grace_s = missing_folder_grace_s
        self._versions: dict[int, LoadedVersion] = {}
        self._failures: dict[int, LoadFailure] = {}
        self._loading: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polled = False  # once True, folders must be unchanged for a poll to be loaded
        self._seen: dict[int, Fingerprint] = {}  # at the previous poll
        self._loaded_from: dict[int, Fingerprint] = {}  # of the folder each served version came from
        self._missing_since: dict[int, float] = {}  # served versions whose folder is gone
        self._heap_changed = False  # a version was loaded or unloaded: collect garbage

    @property
    def versions(self) -> Mapping[int, LoadedVersion]:
        """The loaded versions now (a snapshot)."""
        return self._versions

    def scan(self) -> dict[int, Path]:
        """Version folders that may be loaded: names of ASCII digits within int64 holding a
        saved_model.pb (:func:`amazonia.export.contract.parse_version`).

        The smoke check publishes through ``.tmp-<version>.*`` and renames it when complete, so
        other names are skipped, as TF Serving skips them. Two names for one version (``7``
        and ``007``): the last in sorted order is loaded, as TF Serving picks it.
        """
        try:
            names = sorted(entry.name for entry in os.scandir(self.base_path))
        except OSError as err:
            raise AmazoniaError(f"cannot list {self.base_path}: {err.strerror}") from None
        found: dict[int, Path] = {}
        for name in names:
            version = parse_version(name)
            if version is None or not (self.base_path / name / SAVED_MODEL_PB).is_file():
                continue
            if version in found:
                log.warning(
                    "folders %s and %s both hold version %d: loading %s",
                    found[version].name,
                    name,
                    version,
                    name,
                )
            found[version] = self.base_path / name
        return found

    def refresh(self) -> None:
        """One poll: load new and changed folders that the version policy keeps (highest
        first), then unload versions whose folder is gone for good or that the policy
        drops, then reclaim what loading and unloading left."""
        _freeze_heap()
        try:
            found = self.scan()
        except AmazoniaError as err:  # a transient error must not unload what serves
            log.warning("%s; keeping the loaded versions", err)
            return
        aspired = self.policy.select(found)
        fingerprints = {version: folder_fingerprint(found[version]) for version in aspired}
        previous, self._seen = self._seen, fingerprints
        with self._lock:
            self._failures = {v: f for v, f in self._failures.items() if v in aspired}
        for version in sorted(aspired, reverse=True):
            fingerprint = fingerprints[version]
            if self._loaded_from.get(version) == fingerprint:
                continue  # serving this very folder
            if self._polled and previous.get(version) != fingerprint:
                continue  # new or changed since the last poll: maybe still being written
            failed = self._failures.get(version)
            if failed is not None and failed.fingerprint == fingerprint:
                if failed.retry_at is None or time.monotonic() < failed.retry_at:
                    continue
            self._try_load(version, found[version], fingerprint, failed)
        self._unload_missing(found, aspired)
        self._unload_dropped(found, aspired)
        self._polled = True
        if self._heap_changed:
            # An unloaded version is held in reference cycles; collected now, not whenever
            # the collector's thresholds say, so that memory stays flat across reloads.
            gc.collect()
            self._heap_changed = False

    def _try_load(
        self, version: int, path: Path, fingerprint: Fingerprint, failed: LoadFailure | None
    ) -> None:
        self._loading = version
        started = time.perf_counter()
        try:
            loaded = load_version(path, version, self.max_saved_model_bytes)
        except Exception as err:  # a bad folder must not stop the others
            if self.metrics is not None:
                warmup = err.run if isinstance(err, WarmupError) else None
                self.metrics.record_load(self.name, version, time.perf_counter() - started, False, warmup)
            self._record_failure(version, path, fingerprint, failed, err)
            return
        finally:
            self._loading = None
        if self.metrics is not None:
            self.metrics.record_load(self.name, version, time.perf_counter() - started, True, loaded.warmup)
        if version in self._versions:
            log.info("version %d: now served from its new folder; the old one's model is unloaded", version)
        with self._lock:
            self._versions = {**self._versions, version: loaded}
            self._failures = {v: f for v, f in self._failures.items() if v != version}
        self._loaded_from[version] = fingerprint
        self._missing_since.pop(version, None)
        self._heap_changed = True

    def _record_failure(
        self, version: int, path: Path, fingerprint: Fingerprint, failed: LoadFailure | None, err: Exception
    ) -> None:
        reason = str(err) if isinstance(err, AmazoniaError) else f"cannot load it: {tf_error_message(err)}"
        error = f"version {version}: {without_server_paths(reason, path)}"
        attempts = failed.attempts + 1 if failed is not None and failed.fingerprint == fingerprint else 1
        if attempts <= self.max_num_load_retries:
            delay = min(self.poll_seconds * 2 ** (attempts - 1), MAX_LOAD_RETRY_INTERVAL_S)
            retry_at: float | None = time.monotonic() + delay
            plan = f"retrying in {delay:g} s (attempt {attempts} of {self.max_num_load_retries + 1})"
        else:
            retry_at = None
            plan = f"gave up after {attempts} attempts: change the folder (or touch it) to retry"
        message = f"{error}; {plan}"
        serving = "serving the version loaded before" if version in self._versions else "serving the others"
        log.warning("%s; %s (folder %s)", message, serving, path)
        with self._lock:
            self._failures = {
                **self._failures,
                version: LoadFailure(version, fingerprint, _error_code(err), message, attempts, retry_at),
            }

    def _unload_missing(self, found: Mapping[int, Path], aspired: set[int]) -> None:
        """Unload served versions whose folder has been gone for the grace period, but never
        the last one while another folder waits to be loaded (TF Serving's availability)."""
        now = time.monotonic()
        expired = []
        for version in self._versions:
            if version in found:
                self._missing_since.pop(version, None)
                continue
            if version not in self._missing_since:
                log.info(
                    "version %d: folder %s is gone; serving it on for %g s in case it is being replaced",
                    version,
                    self.base_path / str(version),
                    self.missing_folder_grace_s,
                )
                self._missing_since[version] = now
            if now - self._missing_since[version] >= self.missing_folder_grace_s:
                expired.append(version)
        if not expired:
            return
        waiting = any(
            v not in self._versions and not (v in self._failures and self._failures[v].retry_at is None)
            for v in aspired
        )
        if waiting and len(expired) == len(self._versions):
            expired.remove(max(expired))  # the only one served until the waiting folder loads
        with self._lock:
            self._versions = {v: m for v, m in self._versions.items() if v not in expired}
        for version in expired:
            log.info(
                "version %d: unloaded, its folder has been gone for %g s",
                version,
                self.missing_folder_grace_s,
            )
            del self._missing_since[version], self._loaded_from[version]
        self._heap_changed = True

    def _unload_dropped(self, found: Mapping[int, Path], aspired: set[int]) -> None:
        """Unload the versions whose folder is there but that the version policy no longer
        keeps, once a version it keeps is served: never leave the model with none."""
        dropped = [v for v in self._versions if v in found and v not in aspired]
        if not dropped or not any(v in self._versions for v in aspired):
            return
        with self._lock:
            self._versions = {v: m for v, m in self._versions.items() if v not in dropped}
        for version in dropped:
            log.info("version %d: unloaded, version policy %s drops it", version, self.policy.describe())
            self._loaded_from.pop(version, None)
            self._missing_since.pop(version, None)
        self._heap_changed = True

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
        if name == self.name and versions:
            if version is None:
                return versions[max(versions)]
            if version in versions:
                return versions[version]
        raise servable_not_found(name, version)

    def status(self, name: str, version: int | None) -> list[dict]:
        """``model_version_status`` entries, highest version first, as TF Serving lists them.

        A version being loaded for the first time is ``LOADING``; one whose load failed is
        ``END`` with the error, as TF Serving shows it, also while it is retried; a served
        version is ``AVAILABLE``, also while a replacement of its folder loads or has failed.
        """
        entries: dict[int, dict] = {}
        if name == self.name:
            loading = self._loading
            if loading is not None:
                entries[loading] = rest.version_status(loading, LOADING)
            for failure in self._failures.values():
                entries[failure.version] = rest.version_status(
                    failure.version, END, failure.error_code, failure.message
                )
            entries.update({v: rest.version_status(v, AVAILABLE) for v in self._versions})
        if version is not None:
            if version not in entries:
                raise version_not_found(name, version)
            return [entries[version]]
        if not entries:
            raise version_not_found(name, None)
        return [entries[v] for v in sorted(entries, reverse=True)]

    def states(self) -> dict[int, str]:
        """The state of each version this repository knows, as :meth:`status` shows it."""
        loading = self._loading
        states = {} if loading is None else {loading: LOADING}
        states.update({failure.version: END for failure in self._failures.values()})
        states.update(dict.fromkeys(self._versions, AVAILABLE))
        return states


def servable_not_found(name: str, version: int | None) -> RestError:
    """TF Serving's 404 for a request naming a model or version that is not served."""
    spec = f"Latest({rest.echo(name)})" if version is None else f"Specific({rest.echo(name)}, {version})"
    return RestError(NOT_FOUND, f"Servable not found for request: {spec}")


def version_not_found(name: str, version: int | None) -> RestError:
    """TF Serving's 404 for the status of a model or version it does not know."""
    if version is None:
        return RestError(NOT_FOUND, f"Could not find any versions of model {rest.echo(name)}")
    return RestError(NOT_FOUND, f"Could not find version {version} of model {rest.echo(name)}")
