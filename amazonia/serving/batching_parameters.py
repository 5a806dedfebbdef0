"""TF Serving's batching parameters file (``--batching_parameters_file``), read and checked.

The file is a text-format ``tensorflow.serving.BatchingParameters`` message (TF Serving's
``session_bundle_config.proto``), the same file ``tensorflow_model_server`` reads::

    max_batch_size { value: 32 }
    batch_timeout_micros { value: 2000 }
    max_enqueued_batches { value: 16 }
    num_batch_threads { value: 2 }

The message is vendored here (:func:`_message_class`): ``tensorflow-serving-api`` ships no
``session_bundle_config_pb2``, and it requires the full ``tensorflow`` package. Protobuf's
own text-format parser reads the file, so its syntax (comments, field order, repeated
``allowed_batch_sizes``) is TF Serving's, and a misspelt field is an error naming its line.

A field left out takes the value TF Serving gives it (``SharedBatchScheduler``'s
``QueueOptions``): at most 1000 instances a batch, no timeout, 10 enqueued batches, one
batch thread per core. Every value is bounded (:data:`BOUNDS`), so every file that
validates runs; the checks TF Serving makes at load (``allowed_batch_sizes`` increasing and
ending at the batch size) are made when ``amazonia serve`` starts, with TF Serving's words.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from amazonia.common.errors import AmazoniaError
from amazonia.serving.params import ServeParams

MAX_FILE_BYTES = 64 * 1024  # a batching parameters file is a few lines
DEFAULT_THREAD_POOL_NAME = "model_server_batch_threads"  # what TF Serving names it without a file
# (low, high) of each numeric field: beyond them a value is a typo, or makes requests wait
# longer than any client does (a timeout over a minute).
BOUNDS = {
    "max_batch_size": (1, 1_000_000),
    "batch_timeout_micros": (0, 60_000_000),
    "max_enqueued_batches": (1, 1_000_000),
    "num_batch_threads": (1, 256),
    "max_execution_batch_size": (1, 1_000_000),
}


class BatchingParametersError(AmazoniaError):
    """The batching parameters (file or flags) cannot be used; the message says where."""


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's ``BatchingParameters``, with its defaults (``shared_batch_scheduler.h``)."""

    max_batch_size: int = 1000  # instances of one request, and of one batch
    batch_timeout_micros: int = 0  # how long an open batch waits for more requests
    max_enqueued_batches: int = 10  # batches waiting (the open one included); more: 503
    num_batch_threads: int = os.cpu_count() or 1  # batches run at once
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME
    allowed_batch_sizes: tuple[int, ...] = ()  # a batch is padded up to the next one
    enable_large_batch_splitting: bool = False  # a request larger than a batch is split, not refused
    max_execution_batch_size: int | None = None  # with splitting: the size of a batch

    @property
    def batch_size_limit(self) -> int:
        """Instances a batch holds: ``max_execution_batch_size`` with splitting, else
        ``max_batch_size`` (TF Serving's ``GetMaxExecutionBatchSize``)."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            return self.max_execution_batch_size
        return self.max_batch_size


def load_batching_parameters(settings: ServeParams) -> BatchingParameters | None:
    """The batching parameters ``settings`` ask for (None: batching is off, TF Serving's
    default), from ``serve.batching_parameters_file`` or TF Serving's defaults; a
    :class:`BatchingParametersError` naming the file, line and field if one is wrong."""
    path = settings.batching_parameters_file
    if not settings.enable_batching:
        if path:
            # TF Serving stops too: "You supplied --batching_parameters_file without --enable_batching".
            raise BatchingParametersError(
                f"serve.batching_parameters_file (--batching_parameters_file) is {path!r} but batching is "
                "off: set serve.enable_batching (--enable_batching) too, or drop the file"
            )
        return None
    if not path:
        return BatchingParameters()
    return read_batching_parameters(Path(path))


def read_batching_parameters(path: Path) -> BatchingParameters:
    """``path`` parsed as TF Serving parses it, then checked against :data:`BOUNDS` and TF
    Serving's rules for ``allowed_batch_sizes``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise BatchingParametersError(
            f"cannot read the batching parameters file {path}: {err.strerror or err}; "
            "check serve.batching_parameters_file (--batching_parameters_file)"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise BatchingParametersError(
            f"{path}: more than {MAX_FILE_BYTES:,} bytes; a batching parameters file is a few lines of "
            "BatchingParameters text format"
        )
    message = _message_class()()
    try:
        text_format.Parse(data.decode("utf-8", errors="replace"), message)
    except text_format.ParseError as err:
        raise BatchingParametersError(
            f"{path}:{err.GetLine() or '?'}:{err.GetColumn() or '?'}: {_parse_problem(err)}; the file is "
            "TF Serving's BatchingParameters in text format, e.g. 'max_batch_size { value: 32 }'"
        ) from None
    return _checked(message, path)


def _parse_problem(err: text_format.ParseError) -> str:
    """The parser's message without the position it starts with (the caller puts the file's)."""
    text = str(err)
    prefix = f"{err.GetLine()}:{err.GetColumn()} : "
    return (text[len(prefix) :] if text.startswith(prefix) else text).rstrip(".")


def _checked(message: Any, path: Path) -> BatchingParameters:
    values: dict[str, Any] = {}
    for name, (low, high) in BOUNDS.items():
        if message.HasField(name):
            value = getattr(message, name).value
            if not low <= value <= high:
                raise BatchingParametersError(
                    f"{path}: {name}: must be at least {low:,} and at most {high:,} (got {value:,})"
                )
            values[name] = value
    if message.HasField("thread_pool_name"):
        values["thread_pool_name"] = message.thread_pool_name.value or DEFAULT_THREAD_POOL_NAME
    if message.HasField("enable_large_batch_splitting"):
        values["enable_large_batch_splitting"] = message.enable_large_batch_splitting.value
    if message.pad_variable_length_inputs:
        raise BatchingParametersError(
            f"{path}: pad_variable_length_inputs: true is not supported: amazonia serve never pads an "
            "input; requests whose inputs differ in shape beyond the batch dimension are batched apart. "
            "Drop the line"
        )
    parameters = BatchingParameters(allowed_batch_sizes=tuple(message.allowed_batch_sizes), **values)
    if parameters.max_execution_batch_size is not None and (
        parameters.max_execution_batch_size > parameters.max_batch_size
    ):
        raise BatchingParametersError(
            f"{path}: max_execution_batch_size ({parameters.max_execution_batch_size:,}) is larger than "
            f"max_batch_size ({parameters.max_batch_size:,}); a batch cannot hold more than a request may"
        )
    _check_allowed_batch_sizes(parameters, path)
    return parameters


def _check_allowed_batch_sizes(parameters: BatchingParameters, path: Path) -> None:
    """TF Serving's checks (``CreateBasicBatchingSession``), in its words."""
    sizes = parameters.allowed_batch_sizes
    if not sizes:
        return
    if sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise BatchingParametersError(
            f"{path}: allowed_batch_sizes entries must be positive and monotonically increasing (got "
            f"{list(sizes)})"
        )
    limit = parameters.batch_size_limit
    if sizes[-1] != limit:
        rule = (
            "must be equal to max_execution_batch_size"
            if parameters.enable_large_batch_splitting
            else "must match max_batch_size"
        )
        raise BatchingParametersError(
            f"{path}: Last entry in allowed_batch_sizes {rule}; last entry was {sizes[-1]}; expected {limit}"
        )


@functools.cache
def _message_class() -> type:
    """``tensorflow.serving.BatchingParameters``, built in a pool of its own (no clash with a
    generated module of the same name that another package may load)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    proto = descriptor_pb2.FileDescriptorProto(
        name="amazonia/serving/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    # TF Serving's fields; text format reads them by name.
    for number, name, wrapper in (
        (1, "max_batch_size", "Int64Value"),
        (2, "batch_timeout_micros", "Int64Value"),
        (3, "max_enqueued_batches", "Int64Value"),
        (4, "num_batch_threads", "Int64Value"),
        (5, "thread_pool_name", "StringValue"),
        (8, "enable_large_batch_splitting", "BoolValue"),
        (9, "max_execution_batch_size", "Int64Value"),
    ):
        message.field.add(
            name=name,
            number=number,
            label=field.LABEL_OPTIONAL,
            type=field.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
        )
    message.field.add(name="allowed_batch_sizes", number=6, label=field.LABEL_REPEATED, type=field.TYPE_INT64)
    message.field.add(
        name="pad_variable_length_inputs", number=7, label=field.LABEL_OPTIONAL, type=field.TYPE_BOOL
    )
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )
