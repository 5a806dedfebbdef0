"""TF Serving's warmup file, ``assets.extra/tf_serving_warmup_requests``: written and read.

TF Serving replays the requests of this file when it loads a version, before the version
answers, so that no client pays for what TensorFlow does on a function's first calls
(graph optimisation, oneDNN primitives for each input shape); ``amazonia serve`` replays
them the same way. The format is TF Serving's (``saved_model_warmup_util.cc``): an
uncompressed TFRecord file of serialized ``tensorflow.serving.PredictionLog`` protos, at
most :data:`MAX_WARMUP_RECORDS` of them. Here every record is a ``predict_log`` whose
request names its signature and holds its inputs; reading takes TF Serving's other kinds
of record too, and refuses what TF Serving refuses, in its words.

The export stage writes :func:`chip_requests` of the first test chips: real files through
``serving_bytes`` and the same chips' pixels through ``serving_default``. Any requests can
be written (``inputs`` are numpy arrays with the batch dimension)::

    write_warmup_requests(saved_model_dir, [
        WarmupRequest("serving_default", {"input_image": chips}),
        WarmupRequest("serving_bytes", {"image_bytes": np.array([jpeg], dtype=object)}),
    ])
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from amazonia.common.files import write_bytes_atomic
from amazonia.common.tf_errors import tf_error_message
from amazonia.data.records.tfrecord import frame
from amazonia.export.contract import (
    ASSETS_EXTRA,
    INPUT_BYTES,
    SIGNATURE_BYTES,
    SIGNATURE_FLOAT,
    WARMUP_REQUESTS_ASSET,
    ExportError,
)
from amazonia.model.names import INPUT_NAME

log = logging.getLogger(__name__)

# TF Serving's WarmupConsts::kMaxNumRecords: a file of more records fails the load.
MAX_WARMUP_RECORDS = 1000
# As messages name it: relative to the version folder, never a path of the machine.
WARMUP_FILE = f"{ASSETS_EXTRA}/{WARMUP_REQUESTS_ASSET}"
# Test chips the export's file replays: oneDNN prepares its kernels per input shape, so
# each signature gets a request of one chip (what an interactive client sends) and one of
# all of them (a batch); about 1 MB of float pixels at 128 px.
WARMUP_CHIPS = 4


@dataclass(frozen=True)
class WarmupRequest:
    """One predict request to replay: the signature it calls and its inputs by name, each
    a numpy array with the batch dimension first (strings as ``bytes`` objects)."""

    signature_name: str
    inputs: Mapping[str, np.ndarray]


class WarmupFileError(ExportError):
    """The warmup file cannot be replayed; ``error_code`` is TF Serving's canonical code."""

    def __init__(self, message: str, error_code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.error_code = error_code


def warmup_requests_path(saved_model_dir: Path | str) -> Path:
    """Where TF Serving looks for a version's warmup file."""
    return Path(saved_model_dir) / ASSETS_EXTRA / WARMUP_REQUESTS_ASSET


def write_warmup_requests(saved_model_dir: Path | str, requests: Iterable[WarmupRequest]) -> Path:
    """Write ``requests`` as the warmup file of the SavedModel at ``saved_model_dir``,
    atomically; returns the file's path. The bytes depend only on the requests.

    Raises:
        ExportError: no request, more than :data:`MAX_WARMUP_RECORDS`, or an input that is
            not an array TensorFlow can hold.
    """
    records = [_prediction_log(request).SerializeToString(deterministic=True) for request in requests]
    if not records or len(records) > MAX_WARMUP_RECORDS:
        raise ExportError(
            f"{WARMUP_FILE}: {len(records)} warmup requests; TF Serving replays 1 to {MAX_WARMUP_RECORDS}"
        )
    path = warmup_requests_path(saved_model_dir)
    write_bytes_atomic(path, b"".join(frame(record) for record in records))
    return path


def chip_requests(files: Sequence[bytes], images: np.ndarray) -> list[WarmupRequest]:
    """Warmup requests of real chips: ``serving_bytes`` with ``files`` (stored image files),
    then ``serving_default`` with ``images``, the same chips' model input (float32
    (n, S, S, 3)); for each, the first chip alone, then (if more) all of them as one batch.

    Raises:
        ExportError: no chip, or not as many images as files.
    """
    if not len(files) or len(files) != len(images):
        raise ExportError(
            f"{WARMUP_FILE}: {len(files)} chip files and {len(images)} images; warmup needs the "
            "same chips, at least one, both ways"
        )
    encoded = np.array(list(files), dtype=object)
    pixels = np.asarray(images, dtype=np.float32)
    sizes = (1, len(files)) if len(files) > 1 else (1,)
    return [
        WarmupRequest(signature, {name: chips[:size]})
        for signature, name, chips in (
            (SIGNATURE_BYTES, INPUT_BYTES, encoded),
            (SIGNATURE_FLOAT, INPUT_NAME, pixels),
        )
        for size in sizes
    ]


def _prediction_log(request: WarmupRequest) -> prediction_log_pb2.PredictionLog:
    log_record = prediction_log_pb2.PredictionLog()
    predict = log_record.predict_log.request
    predict.model_spec.signature_name = request.signature_name
    for name, array in request.inputs.items():
        try:
            predict.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(array)))
        except (TypeError, ValueError) as err:
            raise ExportError(
                f"{WARMUP_FILE}: input {name!r} of {request.signature_name}: not a tensor ({str(err)[:200]})"
            ) from None
    return log_record


def read_warmup_requests(saved_model_dir: Path | str) -> Iterator[WarmupRequest]:
    """The predict requests of a version's warmup file, in order, read as TF Serving reads
    them: one record at a time, at most :data:`MAX_WARMUP_RECORDS`. Records of kinds a
    predict-only server cannot replay (classify, regress, multi-inference) are skipped with
    a warning; a record with no request in it is skipped, as TF Serving skips it.

    Raises:
        FileNotFoundError: the version has no warmup file.
        WarmupFileError: the file is not a TFRecord file (``DATA_LOSS``), a record is not a
            PredictionLog, there are too many, or one is a ``session_run_log``
            (``UNIMPLEMENTED``), each named as TF Serving names it.
    """
    path = warmup_requests_path(saved_model_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{WARMUP_FILE}: no such file")
    records = iter(tf.data.TFRecordDataset(str(path)))
    index = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except tf.errors.DataLossError as err:
            raise WarmupFileError(
                f"{WARMUP_FILE}: record {index} is unreadable ({tf_error_message(err)}). Please verify "
                "your warmup data is in TFRecord format; export the model again",
                "DATA_LOSS",
            ) from None
        if index >= MAX_WARMUP_RECORDS:
            raise WarmupFileError(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {WARMUP_FILE}"
            )
        request = _predict_request(record.numpy(), index)
        if request is not None:
            yield request
        index += 1


def _predict_request(record: bytes, index: int) -> WarmupRequest | None:
    prediction_log = prediction_log_pb2.PredictionLog()
    try:
        prediction_log.ParseFromString(record)
    except DecodeError:
        raise WarmupFileError(f"Failed to parse warmup record {index} from {WARMUP_FILE}") from None
    kind = prediction_log.WhichOneof("log_type")
    if kind == "session_run_log":
        raise WarmupFileError(
            f"Unsupported log_type for warmup: session_run_log (record {index} of {WARMUP_FILE})",
            "UNIMPLEMENTED",
        )
    if kind != "predict_log":
        if kind is not None:
            log.warning(
                "%s: record %d is a %s, which a predict-only server does not replay", WARMUP_FILE, index, kind
            )
        return None
    return _request_arrays(prediction_log.predict_log.request, index)


def _request_arrays(request: predict_pb2.PredictRequest, index: int) -> WarmupRequest:
    inputs = {}
    for name, tensor in request.inputs.items():
        try:
            inputs[name] = tf.make_ndarray(tensor)
        except (TypeError, ValueError) as err:
            raise WarmupFileError(
                f"{WARMUP_FILE}: record {index}: input {name!r} is no tensor ({str(err)[:200]})"
            ) from None
    # TF Serving's default signature when a request names none.
    return WarmupRequest(request.model_spec.signature_name or SIGNATURE_FLOAT, inputs)
