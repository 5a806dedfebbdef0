"""TF Serving's REST JSON <-> numpy arrays, with TF Serving's rules and error messages.

Everything here follows ``tensorflow_serving/util/json_tensor.cc`` and
``model_servers/http_rest_api_*.cc`` so that a client written against
``tensorflow_model_server`` works unchanged against :mod:`amazonia.serving`:

* ``instances`` (row format) is answered with ``predictions``, ``inputs`` (columnar)
  with ``outputs``; with one named input the values may be plain, with several they
  must be objects keyed by input name; with several outputs each prediction is an
  object keyed by output name. Each instance is read on its own and must have the
  first one's shape (``Expecting shape [2] but got: [3]``).
* Numbers are read as rapidjson reads them: integers in [-2**63, 2**64) stay integers,
  larger ones become doubles, and a number beyond a double's range is a parse error.
  ``NaN`` and ``Infinity`` are accepted and written back as TF Serving writes them.
  A float input takes any number, rounded to the type (1435774380 -> 1435774336.0,
  1e300 -> inf for float32), as TF Serving's ``GetFloat()`` does; an integer input
  takes no decimals. Floats are written back as TF Serving writes them: six significant
  digits where they round-trip (``9e+06``, ``999999.0``), else all (``0.731058598``).
* ``{"b64": "..."}`` carries binary strings, decoded as ``absl::Base64Unescape`` does:
  whitespace anywhere (76-column MIME lines), padding optional; string values may hold
  any bytes (not only valid UTF-8).
* A body may nest as deep as :data:`MAX_JSON_DEPTH`; what TF Serving never reads (a key
  it does not know, however deep its value) is ignored, as there.
* Errors are ``{"error": "<message>"}`` with TF Serving's wording where it has one, in
  its order: the body is parsed, then the model and signature are looked up (404 for
  an unknown model), then the tensors are read.

The module knows nothing of TensorFlow: it works on the signature defs as TF Serving's
metadata endpoint shows them (``DT_FLOAT``, ``{"dim": [{"size": "-1"}]}``).
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import math
import re
import threading
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
# Nesting a body may have. TF Serving's recursive parser has no limit but its stack; this one
# is far beyond any tensor (TF's rank limit is 254) and keeps a 32 MB body of '[' harmless.
MAX_JSON_DEPTH = 10_000
# Levels handed to the stdlib parser at once when a body is nested deeper than its recursion
# limit (~1,000) allows: slices of at most twice this, well inside it.
_SLICE_DEPTH = 200
# A placeholder object's key for a slice parsed apart. No parsed body can hold it: a lone
# "\udfff" escape is refused (_check_surrogate_escapes), undecodable bytes are \udc80-\udcff.
_SLICE_KEY = "\udfff"
_SHOW_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=True)
_COMPACT = json.JSONEncoder(separators=(",", ":"))
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
_TOO_DEEP = "JSON Parse error: The document is nested too deeply"
_ROOT_NOT_SINGULAR = "The document root must not be followed by other values."
_UNCLOSED = {
    "[": "Missing a comma or ']' after an array element.",
    "{": "Missing a comma or '}' after an object member.",
}
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


class _CollectorPause:
    """While any thread is inside, Python's cyclic garbage collector is off. A parsed
    document holds no reference cycles, but the collector, run every 700 allocations,
    walks the growing document again and again: 14 s instead of 1.6 s to parse 32 MB of
    nested lists (16M of them). Other threads' cyclic garbage waits the parse out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0 and self._was_enabled:
                gc.enable()


_COLLECTOR_PAUSE = _CollectorPause()


def parse_json(body: bytes) -> Any:
    """The body as JSON, read as TF Serving's rapidjson reads it, or its
    ``JSON Parse error: ...`` (400)."""
    if not body.strip():
        raise bad_request("JSON Parse error: The document is empty")
    with _COLLECTOR_PAUSE:
        return _parse(body)


def _parse(body: bytes) -> Any:
    """:func:`parse_json`'s work: orjson where it can, else the stdlib parser, in slices if deep."""
    if orjson is not None:
        try:  # orjson reads numbers and strings as rapidjson does, but refuses NaN and Infinity
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity, bytes that are not UTF-8, depth, or a real error: the stdlib parser decides
    # Bytes that are not UTF-8 come through as in rapidjson: a string holds them as they are.
    text = body.decode("utf-8", errors="surrogateescape")
    try:
        document = json.loads(text, parse_int=_json_integer, parse_float=_json_decimal)
    except json.JSONDecodeError as err:
        raise bad_request(f"JSON Parse error: {_rapidjson_message(err.msg)} at offset: {err.pos}") from None
    except _NumberTooBig as err:
        raise bad_request(
            f"JSON Parse error: {_NUMBER_TOO_BIG} at offset: {text.find(err.literal)}"
        ) from None
    except RecursionError:
        if "\\u" in text:  # first: the slices' placeholders must be the only "\udfff" keys
            _check_surrogate_escapes(text)
        return _parse_deep(text, body)
    if "\\u" in text:
        _check_surrogate_escapes(text)
    return document


def _rapidjson_message(python_message: str) -> str:
    return next((m for py, m in _RAPIDJSON_MESSAGES.items() if python_message.startswith(py)), python_message)


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


def _parse_deep(text: str, body: bytes) -> Any:
    """``text``, nested deeper than the stdlib parser's recursion limit allows, parsed in
    slices: every container that opens at a multiple of ``_SLICE_DEPTH`` levels and goes
    ``_SLICE_DEPTH`` levels deeper is cut out of its parent's slice (a placeholder object
    stands in for it) and parsed first, so no slice is deeper than twice that. The
    result is the document the stdlib parser would return with no recursion limit; a
    syntax error anywhere is one of a slice's (or of brackets that do not pair up).
    Refused beyond :data:`MAX_JSON_DEPTH`. Vectorized: seconds for 32 MB of brackets."""
    codes, brackets = _brackets(text, body)
    opens = (codes[brackets] == ord("[")) | (codes[brackets] == ord("{"))
    depth = np.cumsum(np.where(opens, 1, -1), dtype=np.int32)  # after each bracket
    if depth.max() > MAX_JSON_DEPTH:
        raise bad_request(f"{_TOO_DEEP} (more than {MAX_JSON_DEPTH} levels)")
    closed = np.flatnonzero(depth == 0)
    if closed.size and closed[0] < len(brackets) - 1:  # the root is closed, and brackets follow
        after = int(brackets[closed[0]]) + 1
        offset = after + len(text[after:]) - len(text[after:].lstrip(" \t\n\r"))
        raise bad_request(f"JSON Parse error: {_ROOT_NOT_SINGULAR} at offset: {offset}")
    if depth[-1] != 0:
        innermost = brackets[np.flatnonzero(opens & (depth == depth[-1]))[-1]]
        raise bad_request(f"JSON Parse error: {_UNCLOSED[text[innermost]]} at offset: {len(text)}")

    # The containers at multiples of _SLICE_DEPTH: (level, where it opens, where it closes).
    # A close belongs to the level it leaves; by level, then position, a level's brackets
    # alternate open, close.
    level = depth + ~opens
    at_slice_level = np.flatnonzero(level % _SLICE_DEPTH == 0)
    order = at_slice_level[np.argsort(level[at_slice_level].astype(np.int16), kind="stable")]
    c_level, c_start, c_end = level[order[0::2]], brackets[order[0::2]], brackets[order[1::2]]
    # Cut: those with a container _SLICE_DEPTH levels below (the nearest container opened
    # before another, one level up, is its ancestor).
    bounds = {lv: (lo, hi) for lv, lo, hi in _runs(c_level)}
    cut = np.zeros(len(c_level), dtype=bool)
    for deep_level in range(2 * _SLICE_DEPTH, int(c_level[-1]) + 1, _SLICE_DEPTH):
        (lo, hi), (d_lo, d_hi) = bounds[deep_level - _SLICE_DEPTH], bounds[deep_level]
        cut[lo + np.searchsorted(c_start[lo:hi], c_start[d_lo:d_hi]) - 1] = True
    cut_at = {lv: lo + np.flatnonzero(cut[lo:hi]) for lv, (lo, hi) in bounds.items()}
    values: dict[int, Any] = {}
    errors: list[tuple[int, str]] = []

    def resolve(pairs: list[tuple[str, Any]]) -> Any:
        if len(pairs) == 1 and pairs[0][0] == _SLICE_KEY:
            return values.get(pairs[0][1])
        return dict(pairs)

    def parse_slice(index: int, first: int, last: int, slice_level: int) -> None:
        children = cut_at.get(slice_level + _SLICE_DEPTH, np.empty(0, dtype=np.int64))
        starts = c_start[children]
        children = children[np.searchsorted(starts, first) : np.searchsorted(starts, last)]
        pieces, cursor, length, shifts = [], first, 0, [(0, first)]  # (slice offset, text offset)
        for child in children.tolist():
            start, end = int(c_start[child]), int(c_end[child])
            pieces += [text[cursor:start], f'{{"{_SLICE_KEY}":{child}}}']
            length += start - cursor + len(pieces[-1])
            cursor = end + 1
            shifts.append((length, cursor))
        pieces.append(text[cursor : last + 1])
        try:
            values[index] = json.loads(
                "".join(pieces), parse_int=_json_integer, parse_float=_json_decimal, object_pairs_hook=resolve
            )
        except json.JSONDecodeError as err:
            local, offset = next((local, offset) for local, offset in reversed(shifts) if local <= err.pos)
            errors.append((offset + err.pos - local, _rapidjson_message(err.msg)))
        except _NumberTooBig as err:
            errors.append((text.find(err.literal, first), _NUMBER_TOO_BIG))

    for slice_level in sorted(cut_at, reverse=True):  # the deepest first: their values go into their parents
        for index in cut_at[slice_level].tolist():
            parse_slice(index, int(c_start[index]), int(c_end[index]), slice_level)
    parse_slice(-1, 0, len(text) - 1, 0)
    if errors:
        offset, message = min(errors)
        raise bad_request(f"JSON Parse error: {message} at offset: {offset}")
    return values[-1]


def _brackets(text: str, body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``text`` as an array of character codes, and where its brackets outside strings are."""
    if body.isascii():
        codes = np.frombuffer(body, dtype=np.uint8)
    else:  # one code per character, as offsets into ``text`` count them
        codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    quotes = np.flatnonzero(codes == ord('"'))
    backslashes = np.flatnonzero(codes == ord("\\"))
    if quotes.size and backslashes.size:  # a quote after an odd run of backslashes is escaped
        before = np.searchsorted(backslashes, quotes)
        last = np.maximum(before - 1, 0)
        run_starts = np.flatnonzero(np.diff(backslashes, prepend=-2) != 1)
        first_of_run = np.zeros(len(backslashes), dtype=np.int64)
        first_of_run[run_starts] = run_starts
        run = last - np.maximum.accumulate(first_of_run)[last] + 1
        quotes = quotes[~((before > 0) & (backslashes[last] == quotes - 1) & (run % 2 == 1))]
    brackets = np.flatnonzero(
        (codes == ord("[")) | (codes == ord("]")) | (codes == ord("{")) | (codes == ord("}"))
    )
    return codes, brackets[np.searchsorted(quotes, brackets) % 2 == 0]  # an even number of quotes before


def _runs(sorted_values: np.ndarray) -> list[tuple[int, int, int]]:
    """(value, first index, end index) of each run of equal values in a sorted array."""
    starts = np.flatnonzero(np.diff(sorted_values, prepend=sorted_values[0] - 1))
    ends = np.append(starts[1:], len(sorted_values))
    return list(zip(sorted_values[starts].tolist(), starts.tolist(), ends.tolist()))


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
    """The request's tensors, one per input of the signature: read as TF Serving's
    ``FillPredictRequestFromJson`` reads them (its checks, its order, its words), then
    checked against the shapes of ``specs``."""
    if not specs:
        raise bad_request(f"Failed to get input map for signature: {echo(request.signature_name)}")
    document = request.document
    has_instances, has_inputs = INSTANCES in document, INPUTS in document
    if has_instances and has_inputs:
        raise bad_request(
            f"JSON Value: {_show(document)} Not formatted correctly expecting only one of "
            f"'{INPUTS}' or '{INSTANCES}' keys to exist "
        )
    if has_instances:
        instances = document[INSTANCES]
        if not isinstance(instances, list):
            raise bad_request(f"JSON Value: {_show(document)} Excepting '{INSTANCES}' to be an list/array")
        if not instances:
            raise bad_request(f"JSON Value: {_show(document)} No values in '{INSTANCES}' array")
        tensors = _rows(instances, specs, request.may_hold_bools)
    elif has_inputs:
        tensors = _columns(document[INPUTS], specs, request.may_hold_bools)
    else:
        raise bad_request(f"Missing '{INPUTS}' or '{INSTANCES}' key")
    return {
        name: _checked(name, shape, array, specs[name], request.signature_name)
        for name, (shape, array) in tensors.items()
    }


# A tensor as read, before the signature's shape is checked: its shape, and its values
# (None when it has more dimensions than numpy allows).
_Read = tuple[tuple[int, ...], "np.ndarray | None"]


def _checked(
    name: str, shape: tuple[int, ...], array: np.ndarray | None, spec: TensorSpec, signature: str
) -> np.ndarray:
    """``array`` if the signature takes its shape. TF Serving leaves this to the model,
    whose error names no input: this one does, before the model runs."""
    if not spec.accepts(shape):
        shown = (
            str(list(shape))
            if len(shape) <= 16
            else f"[{', '.join(map(str, shape[:16]))}, ...] ({len(shape)} dimensions)"
        )
        raise bad_request(
            f"input '{echo(name)}' of signature '{echo(signature)}' has shape {shown}, "
            f"expected {spec.describe()} (-1: any size); see GET /v1/models/<name>/metadata for the inputs"
        )
    if array is None:
        raise bad_request(
            f"input '{name}': a tensor of {len(shape)} dimensions; at most {_MAX_DIMS} are supported"
        )
    return array


def _rows(instances: list, specs: Mapping[str, TensorSpec], may_hold_bools: bool) -> dict[str, _Read]:
    """``instances``: plain values for a single input, else objects keyed by input name;
    each instance read on its own, and every instance of an input must have the first
    one's shape (TF Serving's ``FillTensorMapFromInstancesList``)."""
    if not isinstance(instances[0], dict) and len(specs) > 1:
        raise bad_request(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    named = _is_named_object(instances[0])
    tensors = _rows_at_once(instances, specs, named, may_hold_bools)
    if tensors is not None:
        return tensors
    # Instance by instance: finds what is wrong, and where, as TF Serving reports it.
    read: dict[str, list[_Read]] = {}
    for i, item in enumerate(instances):
        if named:
            if not _is_named_object(item):
                raise bad_request(f"Expecting object but got list at item {i} of input list")
            for key, value in item.items():
                _add_instance(read, f"{i} key: {echo(key)}", key, value, specs, may_hold_bools)
            if item.keys() != specs.keys():
                raise bad_request(
                    f"Failed to process element: {i} of 'instances' list. JSON object: {_show(item)} "
                    f"must only have keys: {','.join(sorted(specs))}"
                )
        else:
            if _is_named_object(item):
                raise bad_request(f"Expecting value/list but got object at item {i} of input list")
            _add_instance(read, str(i), next(iter(specs)), item, specs, may_hold_bools)
    return {name: _batch(values) for name, values in read.items()}


def _rows_at_once(
    instances: list, specs: Mapping[str, TensorSpec], named: bool, may_hold_bools: bool
) -> dict[str, _Read] | None:
    """Every input's instances as one array, when numpy reads them densely and no value can
    be wrong; else None (the instance-by-instance reading then decides)."""
    if named:
        if not all(_is_named_object(item) and item.keys() == specs.keys() for item in instances):
            return None
        columns = {name: [item[name] for item in instances] for name in specs}
    else:
        if any(_is_named_object(item) for item in instances):
            return None
        columns = {next(iter(specs)): instances}
    tensors = {}
    for name, column in columns.items():
        dtype, shape = specs[name].dtype, _dense_shape(column)
        array = (
            _numbers_fast(column, dtype, shape, may_hold_bools)
            if dtype in _NUMERIC or dtype == DT_BOOL
            else None
        )
        if array is None:
            return None
        tensors[name] = (shape, array)
    return tensors


def _add_instance(
    read: dict[str, list[_Read]],
    element: str,
    name: str,
    value: Any,
    specs: Mapping[str, TensorSpec],
    may_hold_bools: bool,
) -> None:
    """One instance's value of input ``name``, read as TF Serving's ``AddInstanceItem``
    reads it; its errors name the element (``element``: "2", or "2 key: x")."""
    try:
        if name not in specs:
            raise bad_request(f"JSON object: does not have named input: {echo(name)}")
        shape, array = _read(value, specs[name].dtype, may_hold_bools)
        if read.get(name):
            first = read[name][0][0]
            if math.prod(shape) != math.prod(first):
                raise bad_request(f"Expecting tensor size: {math.prod(first)} but got: {math.prod(shape)}")
            if shape != first:
                raise bad_request(f"Expecting shape {_shape_text(first)} but got: {_shape_text(shape)}")
        read.setdefault(name, []).append((shape, array))
    except RestError as err:
        message = f"of 'instances' list. Error: INVALID_ARGUMENT: {err.message}"
        raise bad_request(f"Failed to process element: {element} {message}") from None


def _batch(instances: list[_Read]) -> _Read:
    """Instances of one shape, stacked along a new first dimension."""
    shape = (len(instances), *instances[0][0])
    arrays = [array for _, array in instances]
    if len(shape) > _MAX_DIMS or any(array is None for array in arrays):
        return shape, None
    return shape, np.stack(arrays)


def _columns(inputs: Any, specs: Mapping[str, TensorSpec], may_hold_bools: bool) -> dict[str, _Read]:
    """``inputs``: the whole batch, plain for a single input, else an object keyed by input
    name (other keys are ignored, as TF Serving ignores them). TF Serving's errors here
    name no input: these do."""
    if not _is_named_object(inputs):
        if len(specs) > 1:
            raise bad_request(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        inputs = {next(iter(specs)): inputs}
    tensors = {}
    for name, spec in specs.items():
        if name not in inputs:
            raise bad_request(f"Missing named input: {name} in 'inputs' object.")
        try:
            tensors[name] = _read(inputs[name], spec.dtype, may_hold_bools)
        except RestError as err:
            raise bad_request(f"input '{name}': {err.message}") from None
    return tensors


def _shape_text(shape: tuple[int, ...]) -> str:
    """A shape as TF Serving's messages write it: ``[3,2]``."""
    return f"[{','.join(map(str, shape))}]"


# --- tensors --------------------------------------------------------------------------------


def _read(value: Any, dtype: str, may_hold_bools: bool) -> _Read:
    """A JSON value (nested lists) as a dense tensor of TF Serving's ``dtype``: its shape
    (from the first element of each level, as TF Serving infers it) and its values."""
    shape = _dense_shape(value)
    return shape, to_array(value, dtype, may_hold_bools, shape)


def to_array(value: Any, dtype: str, may_hold_bools: bool, shape: tuple[int, ...]) -> np.ndarray | None:
    """A JSON value (nested lists) as a dense array of TF Serving's ``dtype``, or the first
    problem TF Serving's ``FillTensorProto`` would report, in its words (400).

    ``shape`` is the shape the first element of each level implies (:func:`_dense_shape`).
    None when the value is right but has more dimensions than numpy allows.
    """
    if dtype != DT_STRING and dtype != DT_BOOL and dtype not in _NUMERIC:
        raise bad_request(f"conversion of JSON values to type {dtype} is not supported")
    if dtype != DT_STRING:
        array = _numbers_fast(value, dtype, shape, may_hold_bools)
        if array is not None:
            return array
    # The exact way, value by value: finds what is wrong, or converts what numpy could not.
    leaf = _string_leaf if dtype == DT_STRING else _number_leaf(dtype)
    values = _walk(value, shape, leaf)
    if len(shape) > _MAX_DIMS:
        return None
    if dtype == DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    if dtype == DT_BOOL:
        return np.array(values, dtype=np.bool_).reshape(shape)
    target = _NUMERIC[dtype]
    if dtype in _INT_RANGES:
        # TF Serving narrows int8/int16/uint8 values as a C cast does (300 -> 44 for int8).
        return (
            np.array(values, dtype=np.int64 if np.dtype(target).itemsize < 4 else target)
            .astype(target)
            .reshape(shape)
        )
    with np.errstate(over="ignore"):  # beyond the type's range: infinity, as a C cast gives
        return np.array(values, dtype=np.float64).astype(target).reshape(shape)


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
    if kind in "iu":  # rapidjson's GetFloat() converts an integer to double, then to float
        array = array.astype(np.float64)
    with np.errstate(over="ignore"):  # beyond the type's range: infinity, as a C cast gives
        return array.astype(target)


def _walk(value: Any, shape: tuple[int, ...], leaf: Callable[[Any], Any]) -> list:
    """Every leaf of ``value`` through ``leaf``, depth first, checking the nesting as TF
    Serving's ``FillTensorProto`` does; a loop, not recursion, however deep the lists go."""
    rank = len(shape)
    leaves: list = []
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list):
            if level >= rank:
                raise bad_request(f"Encountered list at unexpected level: {level} expected < {rank}")
            if len(item) != shape[level]:
                raise bad_request(
                    f"Encountered list at unexpected size: {len(item)} at level: {level} "
                    f"expected size: {shape[level]}"
                )
            stack.extend((child, level + 1) for child in reversed(item))
        elif level != rank:
            raise bad_request(
                f"JSON Value: {_show(item)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        else:
            leaves.append(leaf(item))
    return leaves


def _number_leaf(dtype: str) -> Callable[[Any], Any]:
    """The check TF Serving's ``AddValueToTensor`` makes of one JSON value for ``dtype``."""
    expected = dtype.removeprefix("DT_").lower()

    def wrong_type(item: Any) -> RestError:
        return bad_request(
            f"JSON Value: {_show(item)} Type: {_json_type(item)} is not of expected type: {expected}"
        )

    if dtype == DT_BOOL:

        def boolean(item: Any) -> bool:
            if not isinstance(item, bool):
                raise wrong_type(item)
            return item

        return boolean

    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]

        def integer(item: Any) -> int:
            if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
                raise wrong_type(item)
            return item

        return integer

    def decimal(item: Any) -> float | int:  # any number: rounded to the type, as GetFloat() rounds
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise wrong_type(item)
        return item

    return decimal


def _string_leaf(item: Any) -> bytes:
    """One JSON value of a string tensor: a string (its bytes) or ``{"b64": ...}``."""
    if isinstance(item, str):
        return item.encode("utf-8", errors="surrogateescape")  # bytes that were not UTF-8, back as they came
    if isinstance(item, dict):
        if not _is_b64(item):
            raise bad_request(f"JSON Value: {_show(item)} not formatted correctly for base64 data")
        decoded = b64decode_lenient(item[B64])
        if decoded is None:
            raise bad_request(f"Unable to base64 decode {_show(item)}")
        return decoded
    raise bad_request(f"JSON Value: {_show(item)} Type: {_json_type(item)} is not of expected type: string")


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


def predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """``{"predictions": ...}`` or ``{"outputs": ...}`` from the signature's output tensors,
    as TF Serving's ``MakeJsonFromTensors`` writes it (numbers in its text; see
    :func:`_decimal_texts`), or its error (400)."""
    if not outputs:
        raise bad_request("Cannot convert empty tensor map to JSON")
    if not row_format:
        texts = {name: _tensor_json(name, array, 0).item() for name, array in outputs.items()}
        values = _object_json(texts) if len(texts) > 1 else next(iter(texts.values()))
        return f'{{"{OUTPUTS}":{values}}}'.encode()
    batch = 0
    for name, array in outputs.items():
        if array.ndim == 0:
            raise bad_request(f"Tensor name: {name} has no shape information ")
        if array.shape[0] < 1:
            raise bad_request(f"Tensor name: {name} has invalid batch size: {array.shape[0]}")
        if batch and array.shape[0] != batch:
            raise bad_request(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
            )
        batch = array.shape[0]
    rows = {name: _tensor_json(name, array, 1).tolist() for name, array in outputs.items()}
    if len(rows) == 1:
        predictions = next(iter(rows.values()))
    else:
        predictions = [_object_json({name: texts[i] for name, texts in rows.items()}) for i in range(batch)]
    return f'{{"{PREDICTIONS}":[{",".join(predictions)}]}}'.encode()


def _object_json(members: Mapping[str, str]) -> str:
    """A JSON object of ``members``, whose values are JSON texts already."""
    return "{" + ",".join(f"{json.dumps(name)}:{text}" for name, text in members.items()) + "}"


def _tensor_json(name: str, array: np.ndarray, keep: int) -> np.ndarray:
    """The JSON text of every sub-array of ``array`` below its first ``keep`` dimensions
    (one text for ``keep`` 0, one per instance for 1)."""
    texts = _leaf_texts(name, array)
    while texts.ndim > keep:
        lead = texts.shape[:-1]
        rows = texts.reshape(math.prod(lead), texts.shape[-1]).tolist()
        joined = np.empty(len(rows), dtype=object)
        joined[:] = ["[" + ",".join(row) + "]" for row in rows]
        texts = joined.reshape(lead)
    return texts


def _leaf_texts(name: str, array: np.ndarray) -> np.ndarray:
    """The JSON text of every value of ``array``, as TF Serving's ``AddSingleValueAndAdvance``
    writes it: string tensors named ``*_bytes`` as ``{"b64": ...}``."""
    kind = array.dtype.kind
    if kind == "f" and array.dtype.itemsize <= 8:
        return _decimal_texts(array)
    if kind in "iu":
        return array.astype(str)
    if kind == "b":
        return np.where(array, "true", "false")
    if kind in "OSU":
        as_b64 = name.endswith(BYTES_SUFFIX)
        return np.vectorize(lambda v: _COMPACT.encode(_string_value(v, as_b64)), otypes=[object])(array)
    raise bad_request(f"Failed to write JSON value for tensor type: {array.dtype.name}")


def _decimal_texts(array: np.ndarray) -> np.ndarray:
    """TF Serving's ``WriteDecimal``: six significant digits (``absl::StrCat``) where they
    read back as the same value, else all of them (``max_digits10``); ``.0`` added to whole
    numbers not in exponent form; ``NaN``, ``Infinity``, ``-Infinity``. A float16 value
    (which TF Serving does not write) is written as float32."""
    values = array.astype(np.float64 if array.dtype == np.float64 else np.float32)
    texts = np.char.mod("%g", values).astype(object)
    inexact = texts.astype(str).astype(values.dtype) != values  # NaN too: replaced below
    texts[inexact] = np.char.mod("%.17g" if values.dtype == np.float64 else "%.9g", values[inexact])
    shown = texts.astype(str)
    whole = (np.char.find(shown, ".") < 0) & (np.char.find(shown, "e") < 0)
    texts[whole] = texts[whole] + ".0"
    texts[np.isnan(values)] = "NaN"
    texts[np.isposinf(values)] = "Infinity"
    texts[np.isneginf(values)] = "-Infinity"
    return texts


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
