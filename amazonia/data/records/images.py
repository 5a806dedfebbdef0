"""Turning a chip file into the JPEG bytes that go into a TFRecord.

Pure PIL, no TensorFlow: this runs in the serialize stage's worker processes.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from amazonia.common.errors import AmazoniaError

# Real chips are 256x256; anything this large is a corrupt header or an attack.
Image.MAX_IMAGE_PIXELS = 8192 * 8192


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


class BadImageError(AmazoniaError):
    """A chip cannot be decoded (corrupt, truncated, not an image)."""


class ImageTooLargeError(BadImageError):
    """An image would decode to more pixels than the decode budget allows."""


# STUB (issue 8): the images helper replaces this with the real, every-frame check.
MAX_DECODED_PIXELS = 4096 * 4096


def check_decode_budget(data: bytes) -> None:
    """Raise :class:`ImageTooLargeError` when decoding ``data`` (every frame TensorFlow's or
    PIL's decoder would touch) needs more than MAX_DECODED_PIXELS pixels; files that are no
    image are left alone (the decoder reports them)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return
    if width * height > MAX_DECODED_PIXELS:
        raise ImageTooLargeError(f"an image of {width}x{height} pixels; at most {MAX_DECODED_PIXELS:,} are decoded")


@dataclass(frozen=True)
class PreparedChip:
    jpeg: bytes
    converted_from: str | None  # e.g. "PNG/RGBA"; None when the input was an RGB JPEG


def prepare_chip(path: Path | str, size: int, quality: int = 90) -> PreparedChip:
    """Read a chip and return RGB JPEG bytes at ``size`` x ``size``.

    An RGB JPEG that already has the right size is returned byte for byte; other
    modes (grayscale, RGBA, CMYK, palette) and formats (PNG bytes in a ``.jpg``)
    are converted to RGB. Raises :class:`BadImageError` for unreadable files.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise BadImageError(f"cannot read: {err.strerror or err}") from None
    return prepare_chip_bytes(data, size, quality)


def prepare_chip_bytes(data: bytes, size: int, quality: int = 90) -> PreparedChip:
    """:func:`prepare_chip` on bytes already in memory."""
    if not data:
        raise BadImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            kind = f"{image.format}/{image.mode}"
            verbatim = image.format == "JPEG" and image.mode == "RGB" and image.size == (size, size)
            if image.format == "JPEG" and not verbatim:
                # libjpeg scales by 1/2, 1/4, 1/8 while decoding: far cheaper than a full decode.
                image.draft("RGB", (size, size))
            image.load()  # a truncated or corrupt file fails here, not later in TensorFlow
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as err:
        raise BadImageError(f"not a readable image: {describe_decode_error(err)}") from None
    if verbatim:
        return PreparedChip(jpeg=data, converted_from=None)
    if image.mode != "RGB":
        # Alpha is dropped, not composited: what tf.io.decode_image(channels=3) does at serving time.
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    converted = None if kind == "JPEG/RGB" else kind
    return PreparedChip(jpeg=buffer.getvalue(), converted_from=converted)


def describe_decode_error(err: Exception) -> str:
    """PIL's message without what differs between runs: the reason lands in manifest.json,
    which must be the same bytes for the same chips. PIL names the stream it read
    (``<_io.BytesIO object at 0x7f...>``), an address that changes every run."""
    if isinstance(err, UnidentifiedImageError):
        return "not a format PIL can identify"
    return _OBJECT_REPR.sub("<data>", str(err)) or type(err).__name__


def prepare_chip_job(job: tuple[str, int, int]) -> tuple[PreparedChip | None, str | None]:
    """:func:`prepare_chip` for a process pool: ``(path, size, quality)`` in,
    ``(chip, None)`` or ``(None, reason)`` out, never an exception."""
    path, size, quality = job
    try:
        return prepare_chip(path, size, quality), None
    except BadImageError as err:
        return None, str(err)
