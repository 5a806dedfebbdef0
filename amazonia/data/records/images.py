"""Turning a chip file into the JPEG bytes that go into a TFRecord.

Pure PIL and numpy, no TensorFlow: this runs in the serialize stage's worker
processes. A chip decodes to the pixels the served model's ``tf.io.decode_image``
(``serving_bytes``) gets from the same file, so training sees what serving sees, and
nothing is decoded past :data:`MAX_DECODED_PIXELS`, the budget the server enforces too.
"""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from amazonia.common.errors import AmazoniaError
from amazonia.data.records import image_headers
from amazonia.data.records.image_headers import ImageHeader

# Pixels one image may decode to, all frames a decoder touches counted: a 4096x4096
# image, 48 MiB as RGB bytes, about 200 MiB once the serving graph holds it as float32.
# Chips are 256x256; a few KB of PNG or GIF can claim billions of pixels.
MAX_DECODED_PIXELS = 4096 * 4096
# giflib keeps every frame of a GIF, each with its own allocations, however small: a
# 30 MB request of 1x1 frames would hold millions. No satellite chip is animated.
MAX_GIF_FRAMES = 1000
# PIL's own check, which warns above the limit and raises above twice it, reads only
# the first frame's header: a second line of defence behind check_decode_budget.
Image.MAX_IMAGE_PIXELS = MAX_DECODED_PIXELS

_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")
_PIL_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_BMP_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_SIDE = math.isqrt(MAX_DECODED_PIXELS)
_BUDGET = f"{MAX_DECODED_PIXELS:,} ({_SIDE}x{_SIDE}) decoded per image"


class BadImageError(AmazoniaError):
    """A chip cannot be decoded (corrupt, truncated, not an image)."""


class ImageTooLargeError(BadImageError):
    """An image would decode to more pixels than the decode budget allows."""


def check_decode_budget(data: bytes) -> None:
    """Raise :class:`ImageTooLargeError` when decoding ``data`` needs more than
    :data:`MAX_DECODED_PIXELS` pixels, or it is a GIF of more than
    :data:`MAX_GIF_FRAMES` frames; reads headers only.

    Counted is what each decoder involved materialises: for a GIF, every frame
    (TensorFlow decodes them all, then keeps the first) or its canvas if larger; for
    other formats the one image they decode (an animated WebP or APNG: its first frame).
    Files TensorFlow does not decode, and headers too broken to read, are left to
    the decoder, which refuses them. Raises :class:`BadImageError` for a file that
    TensorFlow's decoder would crash on (an animated WebP without alpha).
    """
    _checked_header(data)


@dataclass(frozen=True)
class PreparedChip:
    jpeg: bytes
    converted_from: str | None  # e.g. "PNG/RGBA"; None when the input was an RGB JPEG


def prepare_chip(path: Path | str, size: int, quality: int = 90) -> PreparedChip:
    """Read a chip and return RGB JPEG bytes at ``size`` x ``size``.

    An RGB JPEG that already has the right size is returned byte for byte; other
    modes (grayscale, RGBA, CMYK, palette, 16-bit) and formats (PNG bytes in a
    ``.jpg``) are converted to RGB as TensorFlow's ``decode_image(channels=3)``
    converts them. Raises :class:`BadImageError` for files that cannot be read or that
    the served model could not read, :class:`ImageTooLargeError` past the budget.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise BadImageError(f"cannot read: {err.strerror or err}") from None
    return prepare_chip_bytes(data, size, quality)


def prepare_chip_bytes(data: bytes, size: int, quality: int = 90) -> PreparedChip:
    """:func:`prepare_chip` on bytes already in memory."""
    rgb, converted = _decode(data, size)
    if rgb is None:
        return PreparedChip(jpeg=data, converted_from=None)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=quality)
    return PreparedChip(jpeg=buffer.getvalue(), converted_from=None if converted == "JPEG/RGB" else converted)


def decode_rgb(data: bytes) -> Image.Image:
    """The RGB pixels the served model decodes from ``data`` (the ``serving_bytes``
    signature's ``decode_image``), at full size; raises as :func:`prepare_chip` does."""
    rgb, _ = _decode(data, None)
    return rgb


def describe_decode_error(err: Exception) -> str:
    """PIL's message without what differs between runs: the reason lands in manifest.json,
    which must be the same bytes for the same chips. PIL names the stream it read
    (``<_io.BytesIO object at 0x7f...>``), an address that changes every run."""
    if isinstance(err, UnidentifiedImageError):
        return "not a format PIL can identify"
    return _OBJECT_REPR.sub("<data>", str(err)) or type(err).__name__


def _checked_header(data: bytes) -> ImageHeader | None:
    try:
        header = image_headers.read_header(data, MAX_GIF_FRAMES)
    except image_headers.HeaderTooLongError as err:
        raise ImageTooLargeError(
            f"a {err.format} file whose header takes more than {image_headers.MAX_HEADER_BLOCKS:,} "
            "blocks to read (real files need a few dozen to a few thousand): refused unread; re-encode it"
        ) from None
    if header is None:
        return None
    if header.webp_animated_without_alpha:
        raise BadImageError(
            "an animated WebP without alpha: TensorFlow's decoder crashes on it (it aborts the server); "
            "send its first frame as PNG, or save the animation with an alpha channel"
        )
    if header.frames > MAX_GIF_FRAMES:
        raise ImageTooLargeError(
            f"a GIF of more than {MAX_GIF_FRAMES:,} frames, the most decoded per image (TensorFlow "
            "decodes every frame, then keeps the first): send its first frame alone"
        )
    if header.decoded_pixels > MAX_DECODED_PIXELS:
        raise ImageTooLargeError(_too_large_message(header))
    return header


def _decode(data: bytes, size: int | None) -> tuple[Image.Image | None, str]:
    """``data`` as RGB and its ``format/mode``; the image is None when ``data`` is an RGB
    JPEG of ``size`` x ``size`` already, to be kept byte for byte."""
    if not data:
        raise BadImageError("empty file")
    header = _checked_header(data)
    kind = image_headers.sniff_format(data)
    if kind is None:
        raise BadImageError(_unsupported_format_message(data))
    if kind == image_headers.JXL:
        raise BadImageError(
            "a JPEG XL image: this stage decodes with PIL, which has no JPEG XL decoder; convert it to PNG"
        )
    if kind == image_headers.BMP:
        return _decode_bmp(data)
    image, converted, verbatim = _open(data, size)
    if verbatim:
        return None, converted
    if kind == image_headers.GIF:
        return _gif_first_frame(image, header), converted
    return _to_rgb(image), converted


def _open(data: bytes, size: int | None) -> tuple[Image.Image, str, bool]:
    """PIL's first frame of ``data``, loaded, its ``format/mode`` and whether it is an
    RGB JPEG of ``size`` x ``size`` already."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            kind = f"{image.format}/{image.mode}"
            verbatim = kind == "JPEG/RGB" and image.size == (size, size)
            if image.format == "JPEG" and size is not None and not verbatim:
                # libjpeg's 1/2, 1/4, 1/8 scaling while decoding halves serialize's time
                # (2.0 -> 1.0 ms a 256 px chip). It is not the serving graph's bilinear
                # resize: ~1 level of 255 apart on average, well inside JPEG's own error.
                image.draft("RGB", (size, size))
            image.load()  # a truncated or corrupt file fails here, not later in TensorFlow
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Only where PIL reads a header otherwise than TensorFlow does: check_decode_budget ran first.
        match = _PIL_BOMB_PIXELS.search(str(err))
        pixels = f"{int(match.group(1)):,}" if match else "more"
        raise ImageTooLargeError(
            f"an image of {pixels} pixels as PIL reads its header: more than the {_BUDGET}; "
            "scale it down first"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImageError(f"not a readable image: {describe_decode_error(err)}") from None
    return image, kind, verbatim


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        # TensorFlow keeps the high byte of 16-bit samples (libpng's strip_16, what
        # convert_image_dtype does too); PIL's convert clips them to 255 instead,
        # which turns all but the darkest pixels white.
        samples = np.clip(np.asarray(image, dtype=np.int64), 0, 0xFFFF) >> 8
        image = Image.fromarray(samples.astype(np.uint8), "L")
    # Alpha is dropped, not composited, as decode_image(channels=3) drops it.
    return image if image.mode == "RGB" else image.convert("RGB")


def _gif_first_frame(image: Image.Image, header: ImageHeader | None) -> Image.Image:
    """Frame 0 as TensorFlow's GIF decoder draws it, on TensorFlow's canvas.

    That canvas is the largest frame (PIL uses the logical screen), frame 0 sits at
    its offset, and where frame 0 is transparent or absent the pixel is black (PIL
    shows the palette colour of the transparent index there).
    """
    if header is None or image.mode != "P":
        raise BadImageError(
            "a GIF without a colour table or with a broken header: TensorFlow's decoder refuses it; "
            "convert it to PNG"
        )
    frame = header.gif_frames[0]
    indices = np.asarray(image)
    bottom = min(frame.top + frame.height, header.height, indices.shape[0])
    right = min(frame.left + frame.width, header.width, indices.shape[1])
    region = indices[frame.top : bottom, frame.left : right]
    drawn = region != frame.transparent_index
    if np.any(region[drawn] >= frame.colors):
        raise BadImageError(
            f"a GIF whose first frame uses colours past its {frame.colors}-colour table: "
            "TensorFlow's decoder refuses it; convert it to PNG"
        )
    palette = np.zeros((256, 3), np.uint8)
    colours = np.asarray(image.getpalette("RGB") or [], np.uint8).reshape(-1, 3)[:256]
    palette[: len(colours)] = colours
    canvas = np.zeros((header.height, header.width, 3), np.uint8)
    canvas[frame.top : bottom, frame.left : right] = np.where(drawn[..., None], palette[region], 0)
    return Image.fromarray(canvas, "RGB")


def _decode_bmp(data: bytes) -> tuple[Image.Image, str]:
    """A BMP read exactly as TensorFlow's decoder reads it (``DecodeBmpV2``), which
    PIL does not: it takes 8-bit pixels as gray levels whatever the palette and
    refuses compressed and 1-, 4- and 16-bit files."""
    if len(data) < 32:
        raise BadImageError(f"not a readable image: a BMP of {len(data)} bytes, shorter than its header")
    (offset,) = struct.unpack_from("<i", data, 10)
    width, height = struct.unpack_from("<ii", data, 18)
    (bits,) = struct.unpack_from("<h", data, 28)
    channels = bits // 8
    if channels not in _BMP_MODES:
        raise BadImageError(
            f"a {bits}-bit BMP: TensorFlow's decoder reads only 8-, 24- and 32-bit BMPs; convert it to PNG"
        )
    row = (channels * width + 3) // 4 * 4
    if width <= 0 or height == 0 or offset < 0 or len(data) != offset + row * abs(height):
        raise BadImageError(
            "a compressed, cut or malformed BMP (its size does not match its header): "
            "TensorFlow's decoder refuses it; convert it to PNG"
        )
    rows = np.frombuffer(data, np.uint8, row * abs(height), offset).reshape(abs(height), row)
    pixels = rows[:, : channels * width].reshape(abs(height), width, channels)
    if height > 0:  # stored bottom-up
        pixels = pixels[::-1]
    if channels == 1:
        if not _gray_palette(data, offset, pixels):
            raise BadImageError(
                "an 8-bit BMP with a colour palette: TensorFlow's decoder reads its palette indices "
                "as gray levels, so the served model would see other pixels; convert it to PNG"
            )
        rgb = np.repeat(pixels, 3, axis=2)
    else:
        rgb = pixels[..., 2::-1]  # BGR(A) -> RGB, alpha dropped
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB"), f"BMP/{_BMP_MODES[channels]}"


def _gray_palette(data: bytes, offset: int, pixels: np.ndarray) -> bool:
    """Whether every index used maps to its own gray level, or there is no palette."""
    (info_size,) = struct.unpack_from("<I", data, 14)
    start = 14 + info_size
    entries = np.frombuffer(data[start:offset][: 256 * 4], np.uint8)
    if len(entries) < 4:
        return True
    palette = entries[: len(entries) // 4 * 4].reshape(-1, 4)[:, :3]
    used = np.unique(pixels)
    return bool(used[-1] < len(palette) and np.all(palette[used] == used[:, None]))


def _unsupported_format_message(data: bytes) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                name = image.format
    except Image.DecompressionBombError:
        name = "large"
    except (OSError, SyntaxError, ValueError) as err:
        return f"not a readable image: {describe_decode_error(err)}"
    return (
        f"a {name} image: the served model decodes only {', '.join(image_headers.TF_FORMATS)} "
        "(TensorFlow's decode_image), so it could not read this one; convert it to PNG"
    )


def _too_large_message(header: ImageHeader) -> str:
    width, height = header.canvas
    if header.frames > 1:
        return (
            f"a GIF of {header.frames} frames on a {width}x{height} canvas: {header.decoded_pixels:,} "
            "pixels to decode (TensorFlow decodes every frame, then keeps the first), more than the "
            f"{_BUDGET}: send its first frame alone, scaled down if need be"
        )
    return (
        f"a {header.format} image of {width}x{height} pixels: {header.decoded_pixels:,} pixels to decode, "
        f"more than the {_BUDGET}: scale it down first"
    )
