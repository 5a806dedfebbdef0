"""TF Serving's REST JSON <-> numpy arrays, with TF Serving's rules and error messages.

Everything here follows ``tensorflow_serving/util/json_tensor.cc`` and
``model_servers/http_rest_api_*.cc`` so that a client written against
``tensorflow_model_server`` works unchanged against :mod:`amazonia.serving`:

* ``instances`` (row format) is answered with ``predictions``, ``inputs`` (columnar)
  with ``outputs``; with one named input the values may be plain, with several they
  must be objects keyed by input name; with several outputs each prediction is an
  object keyed by output name.
* ``{"b64": "..."}`` carries binary strings; ``NaN`` and ``Infinity`` are accepted and
  written back as TF Serving writes them.
* Errors are ``{"error": "<message>"}`` with TF Serving's wording where it has one.

The module knows nothing of TensorFlow: it works on the signature defs as TF Serving's
metadata endpoint shows them (``DT_FLOAT``, ``{"dim": [{"size": "-1"}]}``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from amazonia.common.errors import AmazoniaError

try:  # several times faster on the 1 MB float payloads; stdlib json is the fallback
    import orjson
except ImportError:  # pragma: no cover - orjson comes with DVC in this project's lock file
    orjson = None

BAD_REQUEST = 400
NOT_FOUND = 404
PAYLOAD_TOO_LARGE = 413

INSTANCES = "instances"
INPUTS = "inputs"
PREDICTIONS = "predictions"
OUTPUTS = "outputs"
SIGNATURE_NAME = "signature_name"
B64 = "b64"
BYTES_SUFFIX = "_bytes"  # string outputs so named are written as {"b64": ...}, as TF Serving does

_SHOWN_CHARS = 200  # of a JSON value quoted in an error message
_MISSING = object()

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


# --- request --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictRequest:
    """A parsed ``:predict`` body: which signature, which format, the raw JSON tensors."""

    signature_name: str
    row_format: bool  # "instances" (answered with "predictions") or "inputs" ("outputs")
    values: Any
    may_hold_bools: bool  # the body has true/false somewhere: numbers need the slow check


def parse_json(body: bytes) -> Any:
    """The body as JSON, or TF Serving's ``JSON Parse error: ...`` (400)."""
    if not body.strip():
        raise bad_request("JSON Parse error: The document is empty")
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity, huge integers or a real error: the stdlib parser decides
    try:
        return json.loads(body)
    except json.JSONDecodeError as err:
        raise bad_request(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
    except UnicodeDecodeError as err:
        raise bad_request(
            f"JSON Parse error: Invalid encoding in string (not UTF-8) at offset: {err.start}"
        ) from None
    except RecursionError:
        raise bad_request("JSON Parse error: The document is nested too deeply") from None


def parse_predict_request(body: bytes, default_signature: str) -> PredictRequest:
    """Check the envelope of a ``:predict`` body; the tensors are converted later,
    once the signature's inputs are known."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise bad_request(f"JSON Value: {_show(doc)} Is not object")
    signature = doc.get(SIGNATURE_NAME, default_signature)
    if not isinstance(signature, str):
        raise bad_request(
            f"JSON Value: {_show(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    has_instances, has_inputs = INSTANCES in doc, INPUTS in doc
    if has_instances and has_inputs:
        raise bad_request(
            f"JSON Value: {_show(doc)} Not formatted correctly expecting only one of "
            f"'{INPUTS}' or '{INSTANCES}' keys to exist"
        )
    if not has_instances and not has_inputs:
        raise bad_request(f"Missing '{INPUTS}' or '{INSTANCES}' key")
    if has_instances:
        instances = doc[INSTANCES]
        if not isinstance(instances, list):
            raise bad_request(f"JSON Value: {_show(doc)} Excepting '{INSTANCES}' to be an list/array")
        if not instances:
            raise bad_request(f"JSON Value: {_show(doc)} No values in '{INSTANCES}' array")
    may_hold_bools = b"true" in body or b"false" in body
    return PredictRequest(
        signature or default_signature, has_instances, doc.get(INSTANCES, doc.get(INPUTS)), may_hold_bools
    )


def request_tensors(request: PredictRequest, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """The request's tensors, one per input of the signature, checked against ``specs``."""
    if not specs:
        raise bad_request(f"Failed to get input map for signature: {request.signature_name}")
    columns = (
        _rows_to_columns(request.values, specs) if request.row_format else _columns(request.values, specs)
    )
    tensors = {}
    for name, value in columns.items():
        where = f"input '{name}'"
        array = to_array(value, specs[name].dtype, where, request.may_hold_bools)
        if not specs[name].accepts(array.shape):
            raise bad_request(
                f"{where} of signature '{request.signature_name}' has shape {list(array.shape)}, "
                f"expected {specs[name].describe()} (-1: any size); "
                "see GET /v1/models/<name>/metadata for the inputs"
            )
        tensors[name] = array
    return tensors


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
                    f"Failed to process element: {i} key: {unknown[0]} of 'instances' list. "
                    f"Error: JSON object: does not have named input: {unknown[0]}"
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


def to_array(value: Any, dtype: str, where: str, may_hold_bools: bool = True) -> np.ndarray:
    """A JSON value (nested lists) as a dense array of TF Serving's ``dtype``."""
    if dtype == DT_STRING:
        return _strings(value, where)
    if dtype != DT_BOOL and dtype not in _NUMERIC:
        raise bad_request(f"{where}: conversion of JSON values to type {dtype} is not supported")
    try:
        array = np.array(value)
    except (ValueError, RecursionError):
        raise bad_request(
            f"{where}: lists of different lengths at the same level; a tensor must be a dense, "
            "rectangular nesting of lists"
        ) from None
    if dtype == DT_BOOL:
        kinds, target = "b", np.bool_
    else:
        target = _NUMERIC[dtype]
        kinds = "iuf" if np.issubdtype(target, np.floating) else "iu"
    # An empty list comes out as float64: fine for any dtype.
    if array.dtype.kind not in kinds and not (array.size == 0 and array.dtype.kind == "f"):
        _raise_type_error(value, dtype, where, lambda v: not _json_kind_matches(v, kinds))
    if dtype == DT_BOOL:
        return array.astype(np.bool_)
    # numpy turns [true, 0.5] into [1.0, 0.5]; TF Serving refuses the true.
    if may_hold_bools and array.size and _first_leaf(value, lambda v: isinstance(v, bool)) is not _MISSING:
        _raise_type_error(value, dtype, where, lambda v: isinstance(v, bool))
    return _cast(array, target, where)


def _cast(array: np.ndarray, target: type, where: str) -> np.ndarray:
    """Cast, refusing TF Serving's 'without loss of precision' cases: out of range values."""
    if array.size == 0:
        return array.astype(target)
    if np.issubdtype(target, np.floating):
        info = np.finfo(target)
        finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
        if array.dtype.kind in "iu":  # integers above 2**digits do not survive the cast
            limit = 2 ** (info.nmant + 1) - 1
            bad = finite[np.abs(finite.astype(np.float64)) > limit]
        else:
            bad = finite[np.abs(finite) > info.max]
        kind = {np.float16: "half", np.float32: "float", np.float64: "double"}[target]
    else:
        info = np.iinfo(target)
        bad = array[(array < info.min) | (array > info.max)]
        kind = np.dtype(target).name
    if bad.size:
        raise bad_request(
            f"{where}: Cannot convert JSON value: {bad.flat[0]} to {kind} without loss of precision."
        )
    return array.astype(target)


def _strings(value: Any, where: str) -> np.ndarray:
    """Nested lists of strings or ``{"b64": ...}`` objects -> an object array of bytes."""
    flat: list[bytes] = []
    shape = _dense_shape(value)
    for leaf in _leaves(value, len(shape), where):
        if isinstance(leaf, str):
            flat.append(leaf.encode("utf-8"))
        elif _is_b64(leaf):
            try:
                flat.append(base64.b64decode(leaf[B64], validate=True))
            except (binascii.Error, ValueError):
                raise bad_request(f"{where}: Unable to base64 decode {_show(leaf)}") from None
        else:
            raise bad_request(
                f"{where}: JSON Value: {_show(leaf)} Type: {_json_type(leaf)} is not of expected type: string"
            )
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _dense_shape(value: Any) -> tuple[int, ...]:
    """The shape implied by the first element at each level, as TF Serving infers it."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _leaves(value: Any, rank: int, where: str, level: int = 0) -> Iterator[Any]:
    """Leaves of a nested list in order, checking it is dense with ``rank`` levels."""
    if not isinstance(value, list):
        if level != rank:
            raise bad_request(
                f"{where}: JSON Value: {_show(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        yield value
        return
    if level >= rank:
        raise bad_request(f"{where}: Encountered list at unexpected level: {level} expected < {rank}")
    for item in value:
        yield from _leaves(item, rank, where, level + 1)


def _raise_type_error(value: Any, expected: str, where: str, wrong: Callable[[Any], bool]) -> NoReturn:
    leaf = _first_leaf(value, wrong)
    shown = "a value" if leaf is _MISSING else f"JSON Value: {_show(leaf)} Type: {_json_type(leaf)}"
    raise bad_request(f"{where}: {shown} is not of expected type: {expected.removeprefix('DT_').lower()}")


def _first_leaf(value: Any, predicate: Callable[[Any], bool]) -> Any:
    """The first non-list value (depth first) for which ``predicate`` holds, else _MISSING."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif predicate(item):
            return item
    return _MISSING


def _json_kind_matches(value: Any, kinds: str) -> bool:
    if isinstance(value, bool):
        return "b" in kinds
    if isinstance(value, int):
        return "i" in kinds
    return isinstance(value, float) and "f" in kinds


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
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...(truncated)"


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


def error_body(message: str) -> dict[str, str]:
    """TF Serving's error object."""
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
