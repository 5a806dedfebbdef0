"""``serve:`` in params.yaml: the settings of ``amazonia serve``, validated when it starts.

No pipeline stage reads them (:mod:`amazonia.common.params` keeps the section as an
opaque mapping), so changing one reruns nothing, and a typo fails ``amazonia serve``
with a message naming the key. Every value that validates runs: the bounds below are
those within which the server works as documented (docs/serving.md), and a command-line
flag is checked against the same bounds as its ``serve.*`` key.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from amazonia.common.params import ParamsError, describe_error
from amazonia.data.records.images import MAX_DECODED_PIXELS

SECTION = "serve"
MIN_SECONDS = 0.01  # shorter waits make every poll or timeout a busy loop
MAX_SECONDS = 86_400.0  # a day: longer waits are a typo, and overflow the OS's timers at some point
# An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")


def _seconds(default: float, description: str) -> Any:
    return Field(default, ge=MIN_SECONDS, le=MAX_SECONDS, allow_inf_nan=False, description=description)


class ServeParams(BaseModel):
    """``serve:`` of params.yaml: the settings of ``amazonia serve`` (``make serve``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    host: str = Field(
        "127.0.0.1", description="an IP address or a host name to listen on; `0.0.0.0` for every interface"
    )
    port: int = Field(8501, ge=1, le=65535, description="TCP port (8501: TF Serving's REST default)")
    poll_seconds: float = _seconds(2.0, "how often new version folders are looked for")
    # Requests and the work they make:
    max_body_mb: float = Field(
        32,
        ge=0.01,
        le=1024,
        allow_inf_nan=False,
        description="a request's body, as sent and once gunzipped; larger are answered 413",
    )
    max_instances: int = Field(
        1024, ge=1, le=1_000_000, description="instances per request; more are answered 400"
    )
    max_request_pixels: int = Field(
        4 * MAX_DECODED_PIXELS,
        ge=1,
        le=2**40,
        description="decoded pixels of all the images of a request (4 of 4096 x 4096); more are answered 400",
    )
    decode_concurrency: int = Field(
        1,
        ge=1,
        le=256,
        description="model calls decoding more than 1024 x 1024 pixels at once; the lightest waiting "
        "goes first",
    )
    # Connections (uvicorn's settings, and the timeouts and caps uvicorn lacks):
    read_timeout_seconds: float = _seconds(
        30.0, "a request's head, then its body, must arrive within this (else closed, or 408)"
    )
    write_timeout_seconds: float = _seconds(
        30.0, "answer bytes a client stopped taking are dropped after this"
    )
    keep_alive_seconds: float = _seconds(5.0, "idle time between requests (uvicorn's timeout_keep_alive)")
    max_connections: int = Field(
        64,
        ge=1,
        le=65535,
        description="connections at once; more are answered 503 (uvicorn's limit_concurrency)",
    )
    max_header_kb: int = Field(
        16, ge=1, le=1024, description="request line and headers; larger are answered 431"
    )
    max_unsent_kb: int = Field(
        1024,
        ge=16,
        le=1_048_576,
        description="answer bytes a client has not taken: a client this far behind is dropped when it "
        "asks again",
    )
    graceful_shutdown_seconds: float = _seconds(
        10.0, "on SIGTERM, requests under way get this long to finish (then 503)"
    )
    # Model folders:
    max_saved_model_mb: int = Field(
        256,
        ge=1,
        le=2047,
        description="a version's `saved_model.pb`; larger is refused unread (protobuf's own limit is 2 GiB)",
    )
    # Server-side batching (TF Serving's --enable_batching and --batching_parameters_file):
    enable_batching: bool = Field(
        False,
        description="TF Serving's `--enable_batching`: concurrent requests for one signature share "
        "model calls ([batching](serving.md#server-side-batching))",
    )
    batching_parameters_file: str = Field(
        "",
        max_length=4096,
        description='TF Serving\'s `--batching_parameters_file`, its `BatchingParameters` text; `""`: '
        "its defaults",
    )

    @field_validator("host")
    @classmethod
    def _host_parses(cls, host: str) -> str:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOST_NAME.fullmatch(host):
                raise ValueError(
                    "neither an IP address nor a host name (letters, digits, '-' and '.'); "
                    "use 0.0.0.0 to listen on every interface"
                ) from None
        return host

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


def load_serve_params(section: Mapping[str, Any] | None, source: str) -> ServeParams:
    """``section`` (params.yaml's ``serve:``, None if absent) validated; :class:`ParamsError`
    naming ``serve.<key>`` (and its bounds) if a value is wrong."""
    try:
        return ServeParams.model_validate(dict(section or {}))
    except ValidationError as err:
        raise ParamsError(f"{source}: {describe(err)}") from None


def check_value(key: str, value: Any) -> Any:
    """``value`` for ``serve.<key>`` validated alone (a command-line flag's); ValueError naming
    the key and its bounds if it is wrong."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"serve.{key}: must be a finite number (got {value})")
    try:
        return getattr(ServeParams.model_validate({key: value}), key)
    except ValidationError as err:
        raise ValueError(describe(err)) from None


def describe(err: ValidationError) -> str:
    """The errors of a ``serve:`` validation, each naming its key; a number out of range
    names both of its bounds."""
    described = []
    for error in err.errors():
        key = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] in _OUT_OF_RANGE:
            got = error["input"]
            shown = f"{got:g}" if isinstance(got, float) else repr(got)
            described.append(f"{SECTION}.{key}: must be {bounds(key)} (got {shown})")
        else:
            described.append(describe_error(error, SECTION))
    return "; ".join(described)


_OUT_OF_RANGE = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_BOUND_WORDS = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}


def bounds(key: str) -> str:
    """``at least 0.01 and at most 1024``: the range of a numeric ``serve.<key>``, from the schema."""
    field = ServeParams.model_fields.get(key)
    parts = []
    for rule in field.metadata if field is not None else ():
        # pydantic's Field(ge=..., gt=..., le=..., lt=...) become annotated_types' Ge, Gt, Le, Lt.
        for attr, words in _BOUND_WORDS.items():
            value = getattr(rule, attr, None)
            if value is not None:
                parts.append(f"{words} {value:g}")
    return " and ".join(parts)
