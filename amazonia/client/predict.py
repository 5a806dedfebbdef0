"""The predict client: image files in, tags out, over TF Serving's REST API.

Images travel as they are on disk, base64 in ``{"b64": ...}`` objects, through the
``serving_bytes`` signature: the model decodes and resizes them, so this side needs
no image library. The vocabulary and ground thresholds that turn outputs into tags
come from the server's assets endpoint (amazonia's extension, see
:mod:`amazonia.serving.server`) or, for a real TF Serving, from the model folder on disk.

The version is pinned first (from the metadata endpoint, which TF Serving has too),
so predictions and thresholds come from the same export even if a new version is
picked up meanwhile.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from amazonia.common.errors import AmazoniaError
from amazonia.export.contract import (
    ASSETS_EXTRA,
    INPUT_BYTES,
    LABEL_MAP_ASSET,
    SIGNATURE_BYTES,
    THRESHOLDS_ASSET,
    load_assets,
)
from amazonia.model.names import OUTPUT_GROUND, OUTPUT_WEATHER

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
MAX_BATCH_IMAGES = 16
MAX_BATCH_BYTES = 4 * 2**20  # of image data per request, well under the server's body limit


class ClientError(AmazoniaError):
    """The images, the server or its answer are not usable; the message says which."""


@dataclass(frozen=True)
class Tagged:
    """One image's prediction, turned into tags."""

    image: str
    version: int
    weather: str
    weather_probability: float
    ground: list[tuple[str, float]]  # above threshold, most probable first
    scores: dict[str, dict[str, float]]  # every label's probability, by head
    thresholds: dict[str, float]

    def describe(self) -> str:
        """One line: ``a.jpg: clear (0.91); ground: primary (0.88), road (0.61)``."""
        ground = ", ".join(f"{tag} ({p:.2f})" for tag, p in self.ground) or "-"
        return f"{self.image}: {self.weather} ({self.weather_probability:.2f}); ground: {ground}"

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "model_version": self.version,
            "tags": [self.weather, *(tag for tag, _ in self.ground)],
            "weather": {"tag": self.weather, "probability": self.weather_probability},
            "ground": [{"tag": t, "probability": p, "threshold": self.thresholds[t]} for t, p in self.ground],
            "scores": self.scores,
        }


def predict_files(
    paths: Sequence[Path | str],
    url: str,
    model_dir: Path | str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Tagged]:
    """Tag image files with the model served at ``url`` (``http://host:port/v1/models/<name>``,
    optionally ``/versions/<n>``). ``model_dir`` gives the assets where the server has
    no assets endpoint (real TF Serving)."""
    images = read_images(paths)
    url = url.rstrip("/")
    with requests.Session() as session:
        version = served_version(session, url, timeout)
        pinned = f"{model_url(url)}/versions/{version}"
        if model_dir is not None:
            label_map, thresholds = load_assets(assets_dir(Path(model_dir), version))
        else:
            label_map, thresholds = fetch_assets(session, pinned, timeout)
        predictions = predict_images(session, pinned, images, [str(p) for p in paths], timeout)
    return [
        to_tags(str(path), version, prediction, label_map, thresholds)
        for path, prediction in zip(paths, predictions)
    ]


def read_images(paths: Sequence[Path | str]) -> list[bytes]:
    """The files' bytes; a missing or unreadable one is an error naming it."""
    images = []
    for path in paths:
        try:
            images.append(Path(path).read_bytes())
        except OSError as err:
            raise ClientError(f"{path}: cannot read it ({err.strerror or err}); check the path") from None
    return images


def model_url(url: str) -> str:
    """``.../v1/models/<name>`` without a ``/versions/<n>`` suffix."""
    head, sep, _ = url.partition("/versions/")
    return head if sep else url


def served_version(session: requests.Session, url: str, timeout: float) -> int:
    """The version the server answers ``url`` with, from its metadata endpoint."""
    metadata = _get_json(session, f"{url}/metadata", timeout)
    try:
        return int(metadata["model_spec"]["version"])
    except (KeyError, TypeError, ValueError):
        raise ClientError(
            f"{url}/metadata: no model_spec.version in the answer; is this TF Serving?"
        ) from None


def fetch_assets(session: requests.Session, url: str, timeout: float) -> tuple[dict, dict]:
    """``(label_map, thresholds)`` from amazonia's assets endpoint under ``url``."""
    found = []
    for asset in (LABEL_MAP_ASSET, THRESHOLDS_ASSET):
        try:
            found.append(_get_json(session, f"{url}/assets/{asset}", timeout))
        except _HttpError as err:
            raise ClientError(
                f"{url}/assets/{asset}: HTTP {err.status} ({err.message}); the assets endpoint is "
                "amazonia's extension, real TF Serving has none: pass --model-dir models/<name> "
                f"(or a version folder) to read {ASSETS_EXTRA}/ from disk"
            ) from None
    return found[0], found[1]


def assets_dir(model_dir: Path, version: int) -> Path:
    """The version folder under ``model_dir`` (models/<name>/), or ``model_dir`` itself when it
    is a version folder."""
    if (model_dir / ASSETS_EXTRA).is_dir():
        return model_dir
    if (model_dir / str(version) / ASSETS_EXTRA).is_dir():
        return model_dir / str(version)
    raise ClientError(
        f"{model_dir}: neither it nor its version {version} has {ASSETS_EXTRA}/; "
        "pass the served model's folder (models/<name>) to --model-dir"
    )


def predict_images(
    session: requests.Session, url: str, images: Sequence[bytes], names: Sequence[str], timeout: float
) -> list[dict]:
    """Raw predictions (``{"weather": [...], "ground": [...]}``) per image, in order."""
    predictions: list[dict] = []
    for start, stop in _batches(images):
        predictions += _predict_batch(session, url, images[start:stop], names[start:stop], timeout)
    return predictions


def _batches(images: Sequence[bytes]) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of at most MAX_BATCH_IMAGES images and ~MAX_BATCH_BYTES."""
    ranges, start, size = [], 0, 0
    for i, image in enumerate(images):
        if i > start and (i - start >= MAX_BATCH_IMAGES or size + len(image) > MAX_BATCH_BYTES):
            ranges.append((start, i))
            start, size = i, 0
        size += len(image)
    if images:
        ranges.append((start, len(images)))
    return ranges


def _predict_batch(
    session: requests.Session, url: str, images: Sequence[bytes], names: Sequence[str], timeout: float
) -> list[dict]:
    payload = {
        "signature_name": SIGNATURE_BYTES,
        "instances": [{INPUT_BYTES: {"b64": base64.b64encode(image).decode("ascii")}} for image in images],
    }
    try:
        answer = _post_json(session, f"{url}:predict", payload, timeout)
    except _HttpError as err:
        if err.status == 400 and len(images) > 1:
            # One bad file fails the whole batch: send them one by one to name it.
            return [
                p
                for i in range(len(images))
                for p in _predict_batch(session, url, images[i : i + 1], names[i : i + 1], timeout)
            ]
        where = names[0] if len(images) == 1 else f"{url}:predict"
        raise ClientError(f"{where}: the server refused it (HTTP {err.status}): {err.message}") from None
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(images):
        raise ClientError(f"{url}:predict: expected {len(images)} predictions, got {_short(answer)}")
    return predictions


def to_tags(image: str, version: int, prediction: Any, label_map: dict, thresholds: dict) -> Tagged:
    """The weather tag (argmax) and the ground tags at or above their thresholds."""
    try:
        weather = [float(p) for p in prediction[OUTPUT_WEATHER]]
        ground = [float(p) for p in prediction[OUTPUT_GROUND]]
    except (KeyError, TypeError, ValueError):
        raise ClientError(
            f"{image}: prediction {_short(prediction)} lacks '{OUTPUT_WEATHER}'/'{OUTPUT_GROUND}'"
        ) from None
    weather_labels, ground_labels = label_map["weather"], label_map["ground"]
    if len(weather) != len(weather_labels) or len(ground) != len(ground_labels):
        raise ClientError(
            f"{image}: the model gives {len(weather)} weather and {len(ground)} ground scores, the label map "
            f"{len(weather_labels)} and {len(ground_labels)} labels; use the model's own assets"
        )
    best = max(range(len(weather)), key=weather.__getitem__)
    limits = {label: float(t) for label, t in thresholds["ground"].items()}
    on = [(label, p) for label, p in zip(ground_labels, ground) if p >= limits[label]]
    return Tagged(
        image=image,
        version=version,
        weather=weather_labels[best],
        weather_probability=weather[best],
        ground=sorted(on, key=lambda item: -item[1]),
        scores={"weather": dict(zip(weather_labels, weather)), "ground": dict(zip(ground_labels, ground))},
        thresholds=limits,
    )


# --- HTTP -----------------------------------------------------------------------------------


class _HttpError(ClientError):
    """The server answered with an error; ``message`` is its ``{"error": ...}``."""

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"{url}: HTTP {status}: {message}")
        self.status, self.message = status, message


def _get_json(session: requests.Session, url: str, timeout: float) -> Any:
    return _answer(url, lambda: session.get(url, timeout=timeout))


def _post_json(session: requests.Session, url: str, payload: Any, timeout: float) -> Any:
    return _answer(url, lambda: session.post(url, json=payload, timeout=timeout))


def _answer(url: str, send: Any) -> Any:
    """The JSON answer of ``send()``; errors become one-line :class:`ClientError`s, HTTP
    errors :class:`_HttpError` with the server's ``{"error": ...}`` message."""
    try:
        response = send()
    except requests.ConnectionError as err:
        raise ClientError(
            f"cannot reach the model server at {url} ({_reason(err)}); start it with 'amazonia serve' "
            "or pass --url"
        ) from None
    except requests.Timeout:
        raise ClientError(f"{url}: no answer in time; is the server overloaded? (--timeout)") from None
    except requests.RequestException as err:
        raise ClientError(f"{url}: {err}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        message = body.get("error") if isinstance(body, dict) else None
        raise _HttpError(url, response.status_code, str(message or response.reason or "no message"))
    if body is None:
        raise ClientError(f"{url}: the answer is not JSON; is this a TF Serving REST endpoint?")
    return body


def _reason(err: requests.ConnectionError) -> str:
    """'Connection refused' rather than urllib3's nested repr."""
    text = str(err)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if marker in text:
            return marker
    return text.splitlines()[0][:200] if text else type(err).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
