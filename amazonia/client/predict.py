"""The predict client: image files in, tags out, over TF Serving's REST API.

Images travel as they are on disk, base64 in ``{"b64": ...}`` objects, through the
``serving_bytes`` signature: the model decodes and resizes them, so this side needs
no image library. The vocabulary and ground thresholds that turn outputs into tags
come from the server's assets endpoint (amazonia's extension, see
:mod:`amazonia.serving.server`) or, for a real TF Serving, from the model folder on disk.

The version is pinned first (from the metadata endpoint, which TF Serving has too),
so predictions and thresholds come from the same export even if a new version is
picked up meanwhile.

Only regular files are read (a named pipe would wait for a writer, a device never ends),
and each is checked before anything is sent. Files go in batches, each file read piece by
piece while its request is sent, so memory stays flat in the number and size of files; tags
come out as the answers arrive. Every request is bounded in total by ``timeout``
(:mod:`amazonia.client.transport`) and every answer is checked (:mod:`amazonia.client.answers`).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from amazonia.client import answers
from amazonia.client.answers import LabelMap, Scores
from amazonia.client.errors import ClientError, HttpError
from amazonia.client.transport import get_json, post_json
from amazonia.export.contract import (
    ASSETS_EXTRA,
    INPUT_BYTES,
    LABEL_MAP_ASSET,
    SIGNATURE_BYTES,
    THRESHOLDS_ASSET,
    load_assets,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
MAX_BATCH_IMAGES = 16
MAX_BATCH_BYTES = 4 * 2**20  # of image data per request, well under the server's default body limit
# Raw bytes read at a time while a request is sent; a multiple of 3, so that the base64 of
# consecutive pieces joins without padding in between.
READ_CHUNK_BYTES = 3 * 2**20


@dataclass(frozen=True)
class ImageFile:
    """An image file as checked before sending: its path as given, and its size."""

    path: str
    size: int


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
) -> Iterator[Tagged]:
    """Tag image files with the model served at ``url`` (``http://host:port/v1/models/<name>``,
    optionally ``/versions/<n>`` or ``/labels/<label>``), in order, as the server answers.
    Every request goes to the version the URL named when the first was sent.

    Every file is checked at once (it exists and is a regular file that can be opened), so a
    bad path fails before anything is sent; the server is asked only as the result is iterated.

    Args:
        paths: image files (JPEG, PNG, ...), sent as they are.
        url: the model's URL.
        model_dir: ``models/<name>/`` (or a version folder) to read the label map and thresholds
            from, where the server has no assets endpoint (real TF Serving).
        timeout: seconds each request may take in all: connect, send, and the whole answer.

    Raises:
        ClientError: a file cannot be read, or the server cannot be reached, refuses a request,
            answers too late or with something malformed; the message names which.
    """
    files = [check_image_file(path) for path in paths]
    return _tag_files(files, url.rstrip("/"), model_dir, timeout)


def _tag_files(
    files: Sequence[ImageFile], url: str, model_dir: Path | str | None, timeout: float
) -> Iterator[Tagged]:
    version = answers.model_version(get_json(f"{url}/metadata", timeout), f"{url}/metadata")
    pinned = f"{model_url(url)}/versions/{version}"
    if model_dir is not None:
        labels, thresholds = disk_assets(Path(model_dir), version)
    else:
        labels, thresholds = fetch_assets(pinned, timeout)
    for batch in batches(files):
        for file, prediction in zip(batch, predict_batch(pinned, batch, timeout)):
            scores = answers.scores(prediction, labels, file.path)
            yield to_tags(file.path, version, scores, labels, thresholds)


# --- files ----------------------------------------------------------------------------------

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_image_file(path: Path | str) -> ImageFile:
    """``path`` with its size, once it has proved to be a regular file that can be opened."""
    with open_regular(path) as stream:
        return ImageFile(str(path), os.fstat(stream.fileno()).st_size)


def open_regular(path: Path | str, hint: str = "pass image files (JPEG, PNG)") -> BinaryIO:
    """``path`` opened for reading; an error naming it, and ending in ``hint``, if it is not a
    regular file (a named pipe would block the read until a writer came, a device never ends).

    Raises:
        ClientError: ``path`` is missing, unreadable or not a regular file.
    """
    try:
        # Checked before opening too: opening some devices acts on them (a tape rewinds).
        _refuse_unless_regular(path, os.stat(path).st_mode, hint)
        # O_NONBLOCK: should a named pipe take the path meanwhile, opening it does not wait.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ClientError(f"{path}: cannot read it ({err.strerror or err}); check the path") from None
    stream = os.fdopen(fd, "rb")
    try:
        _refuse_unless_regular(path, os.fstat(fd).st_mode, hint)
    except ClientError:
        stream.close()
        raise
    return stream


def _refuse_unless_regular(path: Path | str, mode: int, hint: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    raise ClientError(f"{path}: {kind}, not a regular file; {hint}")


def batches(files: Sequence[ImageFile]) -> Iterator[list[ImageFile]]:
    """Consecutive runs of at most MAX_BATCH_IMAGES files and ~MAX_BATCH_BYTES (a larger
    file goes alone)."""
    batch: list[ImageFile] = []
    size = 0
    for file in files:
        if batch and (len(batch) >= MAX_BATCH_IMAGES or size + file.size > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(file)
        size += file.size
    if batch:
        yield batch


# --- assets ---------------------------------------------------------------------------------


def model_url(url: str) -> str:
    """``.../v1/models/<name>`` without a ``/versions/<n>`` or ``/labels/<label>`` suffix."""
    head, sep, tail = url.partition("/v1/models/")
    name = tail.split("/", 1)[0]
    return f"{head}{sep}{name}" if sep else url


def fetch_assets(url: str, timeout: float) -> tuple[LabelMap, dict[str, float]]:
    """The label map and ground thresholds from amazonia's assets endpoint under ``url``."""
    found = []
    for asset in (LABEL_MAP_ASSET, THRESHOLDS_ASSET):
        try:
            found.append(get_json(f"{url}/assets/{asset}", timeout))
        except HttpError as err:
            raise ClientError(
                f"{url}/assets/{asset}: HTTP {err.status} ({err.message}); the assets endpoint is "
                "amazonia's extension, real TF Serving has none: pass --model-dir models/<name> "
                f"(or a version folder) to read {ASSETS_EXTRA}/ from disk"
            ) from None
    labels = answers.label_map(found[0], f"{url}/assets/{LABEL_MAP_ASSET}")
    return labels, answers.thresholds(found[1], labels, f"{url}/assets/{THRESHOLDS_ASSET}")


def disk_assets(model_dir: Path, version: int) -> tuple[LabelMap, dict[str, float]]:
    """The label map and ground thresholds in ``assets.extra/`` of the served version's folder."""
    folder = assets_dir(model_dir, version)
    for asset in (LABEL_MAP_ASSET, THRESHOLDS_ASSET):
        if (folder / ASSETS_EXTRA / asset).exists():  # a missing one is load_assets' error to name
            open_regular(folder / ASSETS_EXTRA / asset, "re-export the model, or copy its folder").close()
    label_map, thresholds = load_assets(folder)
    labels = answers.label_map(label_map, str(folder / ASSETS_EXTRA / LABEL_MAP_ASSET))
    return labels, answers.thresholds(thresholds, labels, str(folder / ASSETS_EXTRA / THRESHOLDS_ASSET))


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


# --- predictions ----------------------------------------------------------------------------


def predict_batch(url: str, files: Sequence[ImageFile], timeout: float) -> list[Any]:
    """The raw predictions (``{"weather": [...], "ground": [...]}``) of ``files``, in order."""
    length, body = request_body(files)
    log.info("sending %d images, %d bytes, to %s:predict", len(files), length, url)
    try:
        answer = post_json(f"{url}:predict", body, length, timeout)
    except HttpError as err:
        if err.status in (400, 413) and len(files) > 1:
            # One bad file fails the whole batch (400), and a server with a lower body limit
            # than ours refuses it (413): send them one by one, to name the file at fault.
            return [p for file in files for p in predict_batch(url, [file], timeout)]
        if err.status == 413:
            raise ClientError(
                f"{files[0].path}: {files[0].size} bytes ({length} as a request) is more than the "
                f"server takes (HTTP 413: {err.message}); send a smaller image, or raise the "
                "server's limit (amazonia serve --max-body-mb)"
            ) from None
        where = files[0].path if len(files) == 1 else f"{url}:predict"
        raise ClientError(f"{where}: the server refused it (HTTP {err.status}): {err.message}") from None
    return answers.predictions(answer, len(files), f"{url}:predict")


_HEAD = b'{"signature_name":' + json.dumps(SIGNATURE_BYTES).encode() + b',"instances":['
_OPEN = b"{" + json.dumps(INPUT_BYTES).encode() + b':{"b64":"'
_CLOSE = b'"}}'
_TAIL = b"]}"


def request_body(files: Sequence[ImageFile]) -> tuple[int, Iterator[bytes]]:
    """``(length, pieces)`` of the predict request for ``files``: ``{"signature_name":
    "serving_bytes", "instances": [{"image_bytes": {"b64": ...}}, ...]}``, made as it is sent.

    The JSON is written by hand (every name is a fixed ASCII identifier, and base64 needs no
    escaping) so that no file is ever whole in memory; its length is known from the sizes.
    """
    base64_bytes = sum(4 * ((file.size + 2) // 3) for file in files)
    wrapping = len(_OPEN) + len(_CLOSE)
    length = len(_HEAD) + base64_bytes + len(files) * wrapping + max(len(files) - 1, 0) + len(_TAIL)
    return length, _pieces(files)


def _pieces(files: Sequence[ImageFile]) -> Iterator[bytes]:
    pending = [_HEAD]
    for i, file in enumerate(files):
        pending.append(b"," + _OPEN if i else _OPEN)
        with open_regular(file.path) as stream:
            left = file.size
            while left:
                data = stream.read(min(READ_CHUNK_BYTES, left))
                if not data:
                    raise ClientError(f"{file.path}: it shrank while it was sent; send it again")
                left -= len(data)
                pending.append(base64.b64encode(data))
                if left:
                    yield b"".join(pending)
                    pending = []
            if stream.read(1):
                raise ClientError(f"{file.path}: it grew while it was sent; send it again")
        pending.append(_CLOSE)
        if sum(map(len, pending)) >= READ_CHUNK_BYTES:
            yield b"".join(pending)
            pending = []
    pending.append(_TAIL)
    yield b"".join(pending)


def to_tags(
    image: str, version: int, scores: Scores, labels: LabelMap, thresholds: dict[str, float]
) -> Tagged:
    """The weather tag (argmax) and the ground tags at or above their thresholds."""
    best = max(range(len(scores.weather)), key=scores.weather.__getitem__)
    on = [(label, p) for label, p in zip(labels.ground, scores.ground) if p >= thresholds[label]]
    return Tagged(
        image=image,
        version=version,
        weather=labels.weather[best],
        weather_probability=scores.weather[best],
        ground=sorted(on, key=lambda item: -item[1]),
        scores={
            "weather": dict(zip(labels.weather, scores.weather)),
            "ground": dict(zip(labels.ground, scores.ground)),
        },
        thresholds=thresholds,
    )
