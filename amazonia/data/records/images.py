"""The one check an image passes before TensorFlow decodes it, wherever it comes from.

The server runs :func:`check_image` on every request image, the serialize stage on
every chip before its bytes go into a shard, the contact sheet before it draws one.
Read from the file's bytes alone, no pixel decoded, no TensorFlow:

1. the decode budget: what the decoder would allocate, from the headers
   (:mod:`amazonia.data.records.image_headers`), at most :data:`MAX_DECODED_PIXELS`,
   every GIF frame counted;
2. decoder amplification the budget does not see: JPEG scans (libjpeg decodes each over
   the whole image), compressed PNG metadata and PNG image data past the last row
   (libpng inflates both in full);
3. TensorFlow's acceptance: the file is complete and consistent as its decoder reads it
   (:mod:`amazonia.data.records.image_structure`), so a chip in a shard is one the
   model's ``tf.io.decode_image`` decodes, in training and in serving alike.
"""

from __future__ import annotations

import math

from amazonia.common.errors import AmazoniaError
from amazonia.data.records import image_headers, image_structure
from amazonia.data.records.image_headers import ImageHeader

# Pixels one image may decode to, all frames a decoder touches counted: a 4096x4096
# image, 48 MiB as RGB bytes, about 200 MiB once the serving graph holds it as float32.
# Chips are 256x256; a few KB of PNG or GIF can claim billions of pixels.
MAX_DECODED_PIXELS = 4096 * 4096
# giflib keeps every frame of a GIF, each with its own allocations, however small: a
# 30 MB request of 1x1 frames would hold millions. No satellite chip is animated.
MAX_GIF_FRAMES = 1000
# libjpeg decodes every scan over every block of its components: a 57 KB progressive
# JPEG of 2048x2048 repeating one scan 2,000 times costs 3.2 s of CPU, 6,000 scans of a
# larger one 43 s. Encoders write 1 to 3 (sequential) or about 10 (progressive, mozjpeg
# a few more); 100 scans of a 4096x4096 image cost 0.7 s, seven times its plain decode.
MAX_JPEG_SCANS = 100
# libpng inflates every zTXt, compressed iTXt and iCCP chunk (up to 8 MB each) as it
# reads the file: 300 of them in 2.3 MB cost 7.6 s of CPU per request. Real text and
# colour profiles take a few KB, an embedded profile rarely over 100 KB.
MAX_PNG_METADATA_BYTES = 1 << 20
# Image data past the last row is inflated too, and discarded with a warning: 2 MB of
# deflate decompress to 2 GB in 3.2 s. Encoders write none.
MAX_PNG_SURPLUS_BYTES = 1 << 20

_CAPS = image_structure.Caps(
    jpeg_scans=MAX_JPEG_SCANS,
    png_metadata_bytes=MAX_PNG_METADATA_BYTES,
    png_surplus_bytes=MAX_PNG_SURPLUS_BYTES,
)
_SIDE = math.isqrt(MAX_DECODED_PIXELS)
_BUDGET = f"{MAX_DECODED_PIXELS:,} ({_SIDE}x{_SIDE}) decoded per image"
UNREADABLE = "not a readable image: "
# What decode_image itself says of a file it cannot classify; the server answers it too.
_UNKNOWN_FORMAT = "Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required"
_OTHER_FORMATS = {  # first bytes of formats a chip is often saved in by mistake
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000",
    b"\xff\x4f\xff\x51": "JPEG 2000",
    b"8BPS": "Photoshop",
}


class BadImageError(AmazoniaError):
    """An image TensorFlow's decoder refuses (corrupt, truncated, not an image) or that
    would cost more to decode than the limits allow."""


class ImageTooLargeError(BadImageError):
    """An image over the decode budget or a decoder-amplification limit."""


def check_image(data: bytes) -> str:
    """The format of ``data`` (one of :data:`image_headers.TF_FORMATS`), once it has passed
    the decode budget, the amplification limits and TensorFlow's acceptance.

    Raises:
        ImageTooLargeError: over :data:`MAX_DECODED_PIXELS`, :data:`MAX_GIF_FRAMES`,
            :data:`MAX_JPEG_SCANS`, :data:`MAX_PNG_METADATA_BYTES`,
            :data:`MAX_PNG_SURPLUS_BYTES`, or a header of more than
            :data:`image_headers.MAX_HEADER_BLOCKS` blocks.
        BadImageError: ``tf.io.decode_image(channels=0, expand_animations=False)`` would
            refuse it (or crash on it: an animated WebP without alpha).
    """
    if not data:
        raise BadImageError("empty file")
    kind = image_headers.sniff_format(data)
    if kind is None:
        raise BadImageError(_unknown_format_message(data))
    header = _checked_header(data)
    try:
        structure = image_structure.inspect(data, kind, _CAPS)
    except image_structure.Undecodable as err:
        raise BadImageError(f"{UNREADABLE}{err} (TensorFlow's decoder refuses it); re-encode it") from None
    except image_headers.HeaderTooLongError as err:
        raise _header_too_long(err.format) from None
    if header is None:  # a header the structure walk passed but the size reader could not read
        raise BadImageError(f"{UNREADABLE}a {kind} file with a malformed header; re-encode it")
    _check_amplification(structure)
    return kind


def _checked_header(data: bytes) -> ImageHeader | None:
    try:
        header = image_headers.read_header(data, MAX_GIF_FRAMES)
    except image_headers.HeaderTooLongError as err:
        raise _header_too_long(err.format) from None
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


def _check_amplification(structure: image_structure.Structure) -> None:
    if structure.jpeg_scans > MAX_JPEG_SCANS:
        raise ImageTooLargeError(
            f"a JPEG of more than {MAX_JPEG_SCANS} scans (libjpeg decodes each over the whole image; "
            "encoders write at most a few dozen): re-encode it"
        )
    if structure.png_metadata_bytes > MAX_PNG_METADATA_BYTES:
        raise ImageTooLargeError(
            f"a PNG whose compressed text and colour-profile chunks inflate to more than "
            f"{MAX_PNG_METADATA_BYTES:,} bytes (libpng inflates them all): strip its metadata "
            "(e.g. re-save it without text chunks)"
        )
    if structure.png_surplus_bytes > MAX_PNG_SURPLUS_BYTES:
        raise ImageTooLargeError(
            f"a PNG whose image data inflates to more than {MAX_PNG_SURPLUS_BYTES:,} bytes past its "
            "last row (libpng inflates and discards them): re-encode it"
        )


def _header_too_long(kind: str) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"a {kind} file whose header takes more than {image_headers.MAX_HEADER_BLOCKS:,} "
        "blocks to read (real files need a few dozen to a few thousand): refused unread; re-encode it"
    )


def _unknown_format_message(data: bytes) -> str:
    name = next((name for magic, name in _OTHER_FORMATS.items() if data.startswith(magic)), None)
    if name is None and data[4:8] == b"ftyp":
        name = "HEIF or AVIF" if data[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"avis") else None
    what = f"a {name} image" if name else "its first bytes are those of no format TensorFlow decodes"
    return f"{UNREADABLE}{_UNKNOWN_FORMAT} ({what}); convert it to PNG"


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
