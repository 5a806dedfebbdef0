"""TF Serving's REST JSON <-> numpy arrays, with TF Serving's rules and error messages.

Everything here follows ``tensorflow_serving/util/json_tensor.cc`` and
``model_servers/http_rest_api_*.cc`` so that a client written against
``tensorflow_model_server`` works unchanged against :mod:`amazonia.serving`:

* ``instances`` (row format) is answered with ``predictions``, ``inputs`` (columnar)
  with ``outputs``; with one named input the values may be plain, with several they
  must be objects keyed by input name; with several outputs each prediction is an
  object keyed by output name.
* Numbers are read as rapidjson reads them: integers in [-2**63, 2**64) stay integers,
  larger ones become doubles, and a number beyond a double's range is a parse error.
  ``NaN`` and ``Infinity`` are accepted and written back as TF Serving writes them.
  A float input takes an integer only up to 2**24 - 1 (2**53 - 1 for double) and a
  decimal only within the type's range; an integer input takes no decimals.
* ``{"b64": "..."}`` carries binary strings, decoded as ``absl::Base64Unescape`` does:
  whitespace anywhere (76-column MIME lines), padding optional; string values may hold
  any bytes (not only valid UTF-8).
* Errors are ``{"error": "<message>"}`` with TF Serving's wording where it has one, in
  its order: the body is parsed, then the model and signature are looked up (404 for
  an unknown model), then the tensors are read.

The module knows nothing of TensorFlow: it works on the signature defs as TF Serving's
metadata endpoint shows them (``DT_FLOAT``, ``{"dim": [{"size": "-1"}]}``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from amazonia.common.errors import AmazoniaError

try:  # several times faster on the 1 MB float payloads; stdlib json is the fallback
    import orjson
except ImportError:  # pragma: no cover - orjson comes with DVC in this project's lock file
    orjson = None

BAD_REQUEST = 400
NOT_FOUND = 404
REQUEST_TIMEOUT = 408
PAYLOAD_TOO_LARGE = 413

INSTANCES = "instances"
INPUTS = "inputs"
PREDICTIONS = "predictions"
OUTPUTS = "outputs"
SIGNATURE_NAME = "signature_name"
B64 = "b64"
BYTES_SUFFIX = "_bytes"  # string outputs so named are written as {"b64": ...}, as TF Serving does

_SHOWN_CHARS = 200  # of a JSON value, or of a string from the request, quoted in an error message
_MAX_ERROR_CHARS = 4096  # of any error message: an answer to a bad request stays small
_TRUNCATED = "...(truncated)"
_SHOW_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=True)
_MAX_DIMS = 64  # numpy 2's limit on an array's dimensions
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1  # rapidjson keeps integers in this range as integers
_MAX_INT_DIGITS = len(str(_INT64_MIN))  # a longer integer literal is out of that range

# TF Serving's names of the dtypes it converts from JSON, and their numpy types.
_NUMERIC = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_HALF": np.float16,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_UINT16": np.uint16,
    "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64,
}
DT_STRING = "DT_STRING"
DT_BOOL = "DT_BOOL"
# The JSON integers each integer dtype takes: rapidjson's IsInt() for the narrow types (TF
# Serving then narrows them as a C cast does), IsInt64(), IsUint(), IsUint64().
_INT_RANGES = {
    "DT_INT8": (-(2**31), 2**31 - 1),
    "DT_INT16": (-(2**31), 2**31 - 1),
    "DT_INT32": (-(2**31), 2**31 - 1),
    "DT_UINT8": (-(2**31), 2**31 - 1),
    "DT_UINT16": (-(2**31), 2**31 - 1),
    "DT_INT64": (_INT64_MIN, 2**63 - 1),
    "DT_UINT32": (0, 2**32 - 1),
    "DT_UINT64": (0, _UINT64_MAX),
}

# Python's json messages in rapidjson's words (rapidjson/error/en.h), where they match one to one.
_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Extra data": "The document root must not be followed by other values.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}
_NUMBER_TOO_BIG = "Number too big to be stored in double."
_SURROGATE_INVALID = "The surrogate pair in string is invalid."
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)

# absl::Base64Unescape: standard alphabet, ASCII whitespace anywhere, then '=' or '.' pads.
_B64_WHITESPACE = " \t\n\v\f\r"
_B64_LENIENT = re.compile(r"([A-Za-z0-9+/ \t\n\v\f\r]*)([=. \t\n\v\f\r]*)")
_B64_DROP_WHITESPACE = str.maketrans("", "", _B64_WHITESPACE)


class RestError(AmazoniaError):
    """A request TF Serving would refuse; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> RestError:
    return RestError(BAD_REQUEST, message)


# --- signatures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One input of a signature: TF Serving's dtype name and shape (-1: any, None: any rank)."""

    dtype: str
    shape: tuple[int, ...] | None

    @classmethod
    def from_tensor_info(cls, info: Mapping[str, Any]) -> TensorSpec:
        """From a TensorInfo as the metadata endpoint shows it."""
        shape = info.get("tensor_shape", {})
        if shape.get("unknown_rank"):
            return cls(info["dtype"], None)
        return cls(info["dtype"], tuple(int(dim["size"]) for dim in shape.get("dim", [])))

    def describe(self) -> str:
        """``float32 [-1, 32, 32, 3]``: what an error message shows as expected."""
        dtype = self.dtype.removeprefix("DT_").lower()
        return f"{dtype} {'[?]' if self.shape is None else list(self.shape)}"

    def accepts(self, shape: Sequence[int]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(w in (-1, s) for w, s in zip(self.shape, shape))


def input_specs(signature_def: Mapping[str, Any]) -> dict[str, TensorSpec]:
    """Input name -> spec of one signature def (metadata JSON layout)."""
    return {name: TensorSpec.from_tensor_info(info) for name, info in signature_def.get("inputs", {}).items()}


# --- parsing --------------------------------------------------------------------------------


class _NumberTooBig(ValueError):
    def __init__(self, literal: str) -> None:
        super().__init__(literal)
        self.literal = literal


def parse_json(body: bytes) -> Any:
    """The body as JSON, read as TF Serving's rapidjson reads it, or its
    ``JSON Parse error: ...`` (400)."""
    if not body.strip():
        raise bad_request("JSON Parse error: The document is empty")
    if orjson is not None:
        try:  # orjson reads numbers and strings as rapidjson does, but refuses NaN and Infinity
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity, bytes that are not UTF-8, or a real error: the stdlib parser decides
    # Bytes that are not UTF-8 come through as in rapidjson: a string holds them as they are.
    text = body.decode("utf-8", errors="surrogateescape")
    try:
        document = json.loads(text, parse_int=_json_integer, parse_float=_json_decimal)
    except json.JSONDecodeError as err:
        message = next((m for py, m in _RAPIDJSON_MESSAGES.items() if err.msg.startswith(py)), err.msg)
        raise bad_request(f"JSON Parse error: {message} at offset: {err.pos}") from None
    except _NumberTooBig as err:
        raise bad_request(
            f"JSON Parse error: {_NUMBER_TOO_BIG} at offset: {text.find(err.literal)}"
        ) from None
    except RecursionError:
        raise bad_request("JSON Parse error: The document is nested too deeply") from None
    if "\\u" in text:
        _check_surrogate_escapes(text)
    return document


def _json_integer(literal: str) -> int | float:
    """An integer literal as rapidjson stores it: an integer in [-2**63, 2**64), else a double."""
    if len(literal) <= _MAX_INT_DIGITS:  # int() refuses literals over 4300 digits; these are short
        value = int(literal)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
    return _json_decimal(literal)


def _json_decimal(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):  # float() rounds 1e400 to inf; rapidjson refuses it
        raise _NumberTooBig(literal)
    return value


def _check_surrogate_escapes(text: str) -> None:
    """Refuse a ``\\uD800``-``\\uDFFF`` escape that is not half of a pair, as rapidjson does
    (Python's parser lets it through into a string no encoder can write)."""
    high_at, high_end = -1, -1
    for match in _ESCAPE.finditer(text):  # escapes only occur inside strings of parsed JSON
        code = int(match.group(1), 16) if match.group(1) else -1
        if high_at >= 0:
            if 0xDC00 <= code <= 0xDFFF and match.start() == high_end:
                high_at = -1
                continue
            break
        if 0xD800 <= code <= 0xDBFF:
            high_at, high_end = match.start(), match.end()
        elif 0xDC00 <= code <= 0xDFFF:
            high_at = match.start()
            break
    if high_at >= 0:
        raise bad_request(f"JSON Parse error: {_SURROGATE_INVALID} at offset: {high_at}")


# --- request --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictRequest:
    """A parsed ``:predict`` body: its JSON object and signature name; the tensors are read
    (:func:`request_tensors`) once the model and signature are known, as in TF Serving."""

    document: dict[str, Any]
    signature_name: str
    may_hold_bools: bool  # the body has true/false somewhere: numbers need the slow check

    @property
    def row_format(self) -> bool:
        """``instances`` (answered with ``predictions``), else ``inputs`` (``outputs``)."""
        return INSTANCES in self.document


def parse_predict_request(body: bytes, default_signature: str) -> PredictRequest:
    """The checks TF Serving makes before it looks the model up: JSON, an object, a string
    ``signature_name``."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise bad_request(f"JSON Value: {_show(document)} Is not object")
    signature = document.get(SIGNATURE_NAME, default_signature)
    if not isinstance(signature, str):
        raise bad_request(
            f"JSON Value: {_show(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    may_hold_bools = b"true" in body or b"false" in body
    return PredictRequest(document, signature or default_signature, may_hold_bools)


def request_tensors(request: PredictRequest, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """The request's tensors, one per input of the signature, checked against ``specs``."""
    if not specs:
        raise bad_request(f"Failed to get input map for signature: {echo(request.signature_name)}")
    document = request.document
    has_instances, has_inputs = INSTANCES in document, INPUTS in document
    if has_instances and has_inputs:
        raise bad_request(
            f"JSON Value: {_show(document)} Not formatted correctly expecting only one of "
            f"'{INPUTS}' or '{INSTANCES}' keys to exist"
        )
    if has_instances:
        instances = document[INSTANCES]
        if not isinstance(instances, list):
            raise bad_request(f"JSON Value: {_show(document)} Excepting '{INSTANCES}' to be an list/array")
        if not instances:
            raise bad_request(f"JSON Value: {_show(document)} No values in '{INSTANCES}' array")
        columns = _rows_to_columns(instances, specs)
    elif has_inputs:
        columns = _columns(document[INPUTS], specs)
    else:
        raise bad_request(f"Missing '{INPUTS}' or '{INSTANCES}' key")
    return {name: _tensor(value, specs[name], f"input '{name}'", request) for name, value in columns.items()}


def _tensor(value: Any, spec: TensorSpec, where: str, request: PredictRequest) -> np.ndarray:
    shape = _dense_shape(value)
    array = to_array(value, spec.dtype, where, request.may_hold_bools, shape)
    if not spec.accepts(shape):
        shown = (
            str(list(shape))
            if len(shape) <= 16
            else f"[{', '.join(map(str, shape[:16]))}, ...] ({len(shape)} dimensions)"
        )
        raise bad_request(
            f"{where} of signature '{echo(request.signature_name)}' has shape {shown}, "
            f"expected {spec.describe()} (-1: any size); see GET /v1/models/<name>/metadata for the inputs"
        )
    if array is None:
        raise bad_request(f"{where}: a tensor of {len(shape)} dimensions; at most {_MAX_DIMS} are supported")
    return array


def _rows_to_columns(instances: list, specs: Mapping[str, TensorSpec]) -> dict[str, list]:
    """``instances``: plain values for a single input, else objects keyed by input name."""
    named = _is_named_object(instances[0])
    if not isinstance(instances[0], dict) and len(specs) > 1:
        raise bad_request(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    if not named:
        for i, item in enumerate(instances):
            if _is_named_object(item):
                raise bad_request(f"Expecting value/list but got object at item {i} of input list")
        return {next(iter(specs)): instances}
    for i, item in enumerate(instances):
        if not _is_named_object(item):
            raise bad_request(f"Expecting object but got list at item {i} of input list")
        if set(item) != set(specs):
            unknown = sorted(set(item) - set(specs))
            if unknown:
                raise bad_request(
                    f"Failed to process element: {i} key: {echo(unknown[0])} of 'instances' list. "
                    f"Error: JSON object: does not have named input: {echo(unknown[0])}"
                )
            raise bad_request(
                f"Failed to process element: {i} of 'instances' list. JSON object: {_show(item)} "
                f"keys must be equal to: {','.join(sorted(specs))}"
            )
    return {name: [item[name] for item in instances] for name in specs}


def _columns(inputs: Any, specs: Mapping[str, TensorSpec]) -> dict[str, Any]:
    """``inputs``: the whole batch, plain for a single input, else an object keyed by input name."""
    if not _is_named_object(inputs):
        if len(specs) > 1:
            raise bad_request(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        return {next(iter(specs)): inputs}
    for name in specs:
        if name not in inputs:
            raise bad_request(f"Missing named input: {name} in 'inputs' object.")
    return {name: inputs[name] for name in specs}


# --- tensors --------------------------------------------------------------------------------


def to_array(
    value: Any,
    dtype: str,
    where: str,
    may_hold_bools: bool,
    shape: tuple[int, ...],
) -> np.ndarray | None:
    """A JSON value (nested lists) as a dense array of TF Serving's ``dtype``, or the first
    problem TF Serving's ``FillTensorProto`` would report, in its words (400).

    ``shape`` is the shape the first element of each level implies (:func:`_dense_shape`).
    None when the value is right but has more dimensions than numpy allows.
    """
    if dtype != DT_STRING and dtype != DT_BOOL and dtype not in _NUMERIC:
        raise bad_request(f"{where}: conversion of JSON values to type {dtype} is not supported")
    if dtype != DT_STRING:
        array = _numbers_fast(value, dtype, shape, may_hold_bools)
        if array is not None:
            return array
    # The exact way, value by value: finds what is wrong, or converts what numpy could not.
    leaf = _string_leaf if dtype == DT_STRING else _number_leaf(dtype)
    values = _walk(value, shape, where, leaf)
    if len(shape) > _MAX_DIMS:
        return None
    if dtype == DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    target = np.bool_ if dtype == DT_BOOL else _NUMERIC[dtype]
    if dtype in _INT_RANGES and np.dtype(target).itemsize < 4:
        # TF Serving narrows int8/int16/uint8 values as a C cast does (300 -> 44 for int8).
        return np.array(values, dtype=np.int64).astype(target).reshape(shape)
    return np.array(values, dtype=target).reshape(shape)


def _numbers_fast(value: Any, dtype: str, shape: tuple[int, ...], may_hold_bools: bool) -> np.ndarray | None:
    """``value`` as an array when numpy reads it densely and no value can be wrong; else None
    (the exact check then decides). Milliseconds for the article's 49,152 floats."""
    if len(shape) > _MAX_DIMS:
        return None
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None  # ragged, too deep, or integers numpy cannot hold together
    if array.shape != shape:
        return None
    target = np.bool_ if dtype == DT_BOOL else _NUMERIC[dtype]
    if array.size == 0:
        return array.astype(target)
    kind = array.dtype.kind
    if dtype == DT_BOOL:
        return array if kind == "b" else None
    if kind not in "iuf":
        return None
    # numpy reads [true, 0.5] as [1.0, 0.5]; TF Serving refuses the true.
    if may_hold_bools and _first_leaf(value, lambda v: isinstance(v, bool)) is not None:
        return None
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if kind == "f" or array.min() < low or array.max() > high:
            return None
        return array.astype(target)
    info = np.finfo(target)
    max_int = 2 ** (info.nmant + 1) - 1  # the largest integer a JSON integer may be, as rapidjson checks
    if kind in "iu":
        return None if np.abs(array.astype(np.float64)).max() > max_int else array.astype(target)
    magnitude = np.abs(array[np.isfinite(array)])
    if magnitude.size and (
        magnitude.max() > info.max
        # Whole numbers this large may have been JSON integers, which are checked against max_int.
        or np.any((magnitude > max_int) & (magnitude == np.trunc(magnitude)))
    ):
        return None
    return array.astype(target)


def _walk(value: Any, shape: tuple[int, ...], where: str, leaf: Callable[[Any, str], Any]) -> list:
    """Every leaf of ``value`` through ``leaf``, depth first, checking the nesting as TF
    Serving's ``FillTensorProto`` does; a loop, not recursion, however deep the lists go."""
    rank = len(shape)
    leaves: list = []
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list):
            if level >= rank:
                raise bad_request(f"{where}: Encountered list at unexpected level: {level} expected < {rank}")
            if len(item) != shape[level]:
                raise bad_request(
                    f"{where}: Encountered list at unexpected size: {len(item)} at level: {level} "
                    f"expected size: {shape[level]}"
                )
            stack.extend((child, level + 1) for child in reversed(item))
        elif level != rank:
            raise bad_request(
                f"{where}: JSON Value: {_show(item)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        else:
            leaves.append(leaf(item, where))
    return leaves


def _number_leaf(dtype: str) -> Callable[[Any, str], Any]:
    """The check TF Serving's ``AddValueToTensor`` makes of one JSON value for ``dtype``."""
    expected = dtype.removeprefix("DT_").lower()

    def wrong_type(item: Any, where: str) -> RestError:
        return bad_request(
            f"{where}: JSON Value: {_show(item)} Type: {_json_type(item)} is not of expected type: {expected}"
        )

    if dtype == DT_BOOL:

        def boolean(item: Any, where: str) -> bool:
            if not isinstance(item, bool):
                raise wrong_type(item, where)
            return item

        return boolean

    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]

        def integer(item: Any, where: str) -> int:
            if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
                raise wrong_type(item, where)
            return item

        return integer

    info = np.finfo(_NUMERIC[dtype])
    max_int = 2 ** (info.nmant + 1) - 1
    kind = {"DT_HALF": "half", "DT_FLOAT": "float", "DT_DOUBLE": "double"}[dtype]

    def decimal(item: Any, where: str) -> float | int:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise wrong_type(item, where)
        lossy = abs(item) > max_int if isinstance(item, int) else math.isfinite(item) and abs(item) > info.max
        if lossy:
            raise bad_request(
                f"{where}: Cannot convert JSON value: {_show(item)} to {kind} without loss of precision."
            )
        return item

    return decimal


def _string_leaf(item: Any, where: str) -> bytes:
    """One JSON value of a string tensor: a string (its bytes) or ``{"b64": ...}``."""
    if isinstance(item, str):
        return item.encode("utf-8", errors="surrogateescape")  # bytes that were not UTF-8, back as they came
    if isinstance(item, dict):
        if not _is_b64(item):
            raise bad_request(f"{where}: JSON Value: {_show(item)} not formatted correctly for base64 data")
        decoded = b64decode_lenient(item[B64])
        if decoded is None:
            raise bad_request(f"{where}: Unable to base64 decode {_show(item)}")
        return decoded
    raise bad_request(
        f"{where}: JSON Value: {_show(item)} Type: {_json_type(item)} is not of expected type: string"
    )


def b64decode_lenient(text: str) -> bytes | None:
    """``text`` decoded as ``absl::Base64Unescape`` (TF Serving's decoder) does, or None.

    Beyond strict base64 it accepts ASCII whitespace anywhere (MIME's 76-column lines),
    no padding, and '.' as a pad; it refuses the URL-safe alphabet, padding in the middle,
    and the wrong number of pads.
    """
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = None
    pads = len(text) - len(text.rstrip("="))
    if decoded is not None and (pads == 0 or ((len(text) - pads) % 4, pads) in ((2, 2), (3, 1))):
        return decoded
    match = _B64_LENIENT.fullmatch(text)
    if match is None:
        return None
    data, tail = match.group(1).translate(_B64_DROP_WHITESPACE), match.group(2)
    pads = len(tail.translate(_B64_DROP_WHITESPACE))
    expected = {0: 0, 2: 2, 3: 1}.get(len(data) % 4)
    if expected is None or pads not in (0, expected):
        return None
    return base64.b64decode(data + "=" * expected)


def _dense_shape(value: Any) -> tuple[int, ...]:
    """The shape implied by the first element at each level, as TF Serving infers it."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _first_leaf(value: Any, predicate: Callable[[Any], bool]) -> Any:
    """The first non-list value (depth first) for which ``predicate`` holds, else None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif predicate(item):
            return item
    return None


def _json_type(value: Any) -> str:
    """rapidjson's type names, as TF Serving's messages use them."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, dict):
        return "Object"
    return "Array"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64), str)


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _show(value: Any) -> str:
    """``value`` as JSON for an error message, cut at _SHOWN_CHARS; encoded lazily, so a
    32 MB document costs no more than its first few hundred characters."""
    shown = ""
    try:
        for chunk in _SHOW_ENCODER.iterencode(value):
            shown += chunk
            if len(shown) > _SHOWN_CHARS:
                return shown[:_SHOWN_CHARS] + _TRUNCATED
    except (RecursionError, ValueError):
        return shown[:_SHOWN_CHARS] + "...(nested too deeply to show)"
    return shown


# --- response -------------------------------------------------------------------------------


def predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """``{"predictions": ...}`` or ``{"outputs": ...}`` from the signature's output tensors."""
    values = {name: _json_values(name, array) for name, array in outputs.items()}
    if not row_format:
        return {OUTPUTS: values if len(values) > 1 else next(iter(values.values()))}
    batch = _batch_size(outputs)
    if len(values) == 1:
        return {PREDICTIONS: next(iter(values.values()))}
    return {PREDICTIONS: [{name: values[name][i] for name in values} for i in range(batch)]}


def _batch_size(outputs: Mapping[str, np.ndarray]) -> int:
    sizes = set()
    for name, array in outputs.items():
        if array.ndim == 0:
            raise bad_request(f"Tensor name: {name} has no shape information ")
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise bad_request(f"Tensor names {', '.join(outputs)} have inconsistent batch sizes {sorted(sizes)}")
    return sizes.pop()


def _json_values(name: str, array: np.ndarray) -> Any:
    """Nested lists; float32 values as their shortest round-trip decimal, as TF Serving writes
    them (0.2, not 0.20000000298023224)."""
    if array.dtype.kind == "f" and array.dtype != np.float64:
        return array.astype(str).astype(np.float64).tolist()
    if array.dtype.kind in "OSU":
        as_b64 = name.endswith(BYTES_SUFFIX)
        return np.vectorize(lambda v: _string_value(v, as_b64), otypes=[object])(array).tolist()
    return array.tolist()


def _string_value(value: Any, as_b64: bool) -> Any:
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if as_b64:
        return {B64: base64.b64encode(data).decode("ascii")}
    return data.decode("utf-8", errors="replace")


def echo(text: str) -> str:
    """A string from the request (a name, a path), as an error message quotes it: its first
    _SHOWN_CHARS characters. An answer must not grow with what the client sent."""
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + _TRUNCATED


def error_body(message: str) -> dict[str, str]:
    """TF Serving's error object; a message past _MAX_ERROR_CHARS is cut there."""
    if len(message) > _MAX_ERROR_CHARS:
        message = message[:_MAX_ERROR_CHARS] + _TRUNCATED
    return {"error": message}


def dumps(obj: Any) -> bytes:
    """JSON as TF Serving writes it: NaN and Infinity allowed (FastAPI's default refuses them)."""
    return json.dumps(obj, allow_nan=True, separators=(",", ":")).encode("utf-8")


# --- status and metadata ------------------------------------------------------------------


def version_status(version: int, state: str, error_code: str = "OK", error_message: str = "") -> dict:
    """One entry of ``model_version_status``; JSON int64 fields are strings, as in TF Serving."""
    return {
        "version": str(version),
        "state": state,
        "status": {"error_code": error_code, "error_message": error_message},
    }


def status_response(entries: Sequence[dict]) -> dict[str, Any]:
    return {"model_version_status": list(entries)}


def metadata_response(model_name: str, version: int, signature_defs: Mapping[str, Any]) -> dict[str, Any]:
    """GetModelMetadataResponse as TF Serving's REST API writes it."""
    return {
        "model_spec": {"name": model_name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": dict(signature_defs)}},
    }
