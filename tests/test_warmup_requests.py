"""TF Serving's warmup file (``assets.extra/tf_serving_warmup_requests``), written and read
in process by :mod:`amazonia.export.warmup`: TF Serving's format byte for byte, and TF
Serving's refusals in its words. Replaying it through ``amazonia serve`` is
tests/test_model_config.py's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from amazonia.data.records.tfrecord import frame
from amazonia.export.contract import ExportError
from amazonia.export.warmup import (
    MAX_WARMUP_RECORDS,
    WarmupFileError,
    WarmupRequest,
    read_warmup_requests,
    warmup_requests_path,
    write_warmup_requests,
)

REQUESTS = [
    WarmupRequest(
        "serving_default", {"input_image": np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)}
    ),
    WarmupRequest(
        "serving_bytes", {"image_bytes": np.array([b"\xff\xd8 a jpeg", b"\x00\xff"], dtype=object)}
    ),
]


def test_requests_read_back_as_written_in_tf_servings_format(tmp_path: Path) -> None:
    path = write_warmup_requests(tmp_path, REQUESTS)
    assert path == tmp_path / "assets.extra" / "tf_serving_warmup_requests"
    read = list(read_warmup_requests(tmp_path))
    assert [r.signature_name for r in read] == ["serving_default", "serving_bytes"]
    for got, sent in zip(read, REQUESTS):
        assert set(got.inputs) == set(sent.inputs)
        for name, array in sent.inputs.items():
            assert got.inputs[name].dtype == array.dtype
            np.testing.assert_array_equal(got.inputs[name], array)
    # What TF Serving reads: PredictionLogs in TFRecord framing, as TensorFlow's own writer frames them.
    records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == [
        "serving_default",
        "serving_bytes",
    ]
    framed = tmp_path / "framed"
    with tf.io.TFRecordWriter(str(framed)) as writer:
        for record in records:
            writer.write(record)
    assert framed.read_bytes() == path.read_bytes()


def test_the_file_depends_only_on_the_requests(tmp_path: Path) -> None:
    many_inputs = WarmupRequest("x", {name: np.array([i], dtype=np.int64) for i, name in enumerate("zyxwvu")})
    first = write_warmup_requests(tmp_path / "a", [many_inputs]).read_bytes()
    reordered = WarmupRequest("x", dict(reversed(list(many_inputs.inputs.items()))))
    assert write_warmup_requests(tmp_path / "b", [reordered]).read_bytes() == first


@pytest.mark.parametrize("count", [0, MAX_WARMUP_RECORDS + 1])
def test_writing_no_request_or_more_than_tf_serving_replays_is_refused(tmp_path: Path, count: int) -> None:
    with pytest.raises(ExportError, match=rf"{count} warmup requests; TF Serving replays 1 to 1000"):
        write_warmup_requests(tmp_path, [REQUESTS[1]] * count)
    assert not warmup_requests_path(tmp_path).exists()


def _write_records(folder: Path, records: list[bytes]) -> None:
    path = warmup_requests_path(folder)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(frame(record) for record in records))


def _log(**fields: object) -> bytes:
    return prediction_log_pb2.PredictionLog(**fields).SerializeToString()


def test_records_a_predict_only_server_cannot_replay_are_skipped_as_tf_serving_skips_empty_ones(
    tmp_path: Path,
) -> None:
    predict = prediction_log_pb2.PredictionLog()
    predict.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    classify = prediction_log_pb2.PredictionLog()
    classify.classify_log.request.model_spec.name = "m"
    _write_records(tmp_path, [_log(), classify.SerializeToString(), predict.SerializeToString()])
    (request,) = read_warmup_requests(tmp_path)
    assert request.signature_name == "serving_default"  # TF Serving's default when none is named
    np.testing.assert_array_equal(request.inputs["x"], [1.0])


@pytest.mark.parametrize(
    "records, code, message",
    [
        (
            None,
            "DATA_LOSS",
            "assets.extra/tf_serving_warmup_requests: record 0 is unreadable (corrupted record at 0",
        ),
        ([b"\xff\xff\xff"], "INVALID_ARGUMENT", "Failed to parse warmup record 0 from assets.extra/"),
        (
            [_log()] * (MAX_WARMUP_RECORDS + 1),
            "INVALID_ARGUMENT",
            "Number of warmup records exceeds the maximum (1000) at assets.extra/tf_serving_warmup_requests",
        ),
        (
            [_log(session_run_log=prediction_log_pb2.SessionRunLog())],
            "UNIMPLEMENTED",
            "Unsupported log_type for warmup: session_run_log (record 0 of",
        ),
    ],
    ids=["not a TFRecord file", "not a PredictionLog", "too many records", "a session run"],
)
def test_files_tf_serving_refuses_are_refused_in_its_words(
    tmp_path: Path, records: list[bytes] | None, code: str, message: str
) -> None:
    if records is None:
        warmup_requests_path(tmp_path).parent.mkdir()
        warmup_requests_path(tmp_path).write_bytes(b"not a TFRecord file")
    else:
        _write_records(tmp_path, records)
    with pytest.raises(WarmupFileError) as raised:
        list(read_warmup_requests(tmp_path))
    assert raised.value.error_code == code
    assert str(raised.value).startswith(message), str(raised.value)
    assert str(tmp_path) not in str(raised.value)
