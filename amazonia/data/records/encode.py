"""One chip and its labels -> the serialized Example of its record, or why it is skipped.

Pixel-free for Kaggle's JPEGs: the chip's bytes pass :func:`amazonia.data.records.images.check_image`
(the decode budget, the decoder-amplification limits, TensorFlow's acceptance read from the
file's structure) and go into the record as they are, next to labels encoded by hand
(:mod:`amazonia.data.records.schema`). A GIF, WebP or JPEG XL chip is also decoded once by
TensorFlow (:mod:`amazonia.data.records.decode_confirmation`). This runs in the local writer
and on Beam's workers alike.
"""

from __future__ import annotations

from typing import NamedTuple

from amazonia.data.records import decode_confirmation, images, schema


class ChipJob(NamedTuple):
    """A chip to encode: a tuple, so a process pool pickles it cheaply."""

    name: str  # Kaggle's image_name
    path: str  # the chip file: a local path, or any URL Beam's filesystems read
    weather: tuple[int, ...]
    ground: tuple[int, ...]


class Encoded(NamedTuple):
    """A chip's record (``example``) and format, or the reason it is skipped (``error``)."""

    example: bytes | None
    error: str | None
    format: str | None  # e.g. "JPEG", as check_image names it; None when skipped


def encode_bytes(job: ChipJob, data: bytes) -> Encoded:
    """The record of ``job`` whose chip file holds ``data``."""
    try:
        kind = images.check_image(data)
        decode_confirmation.confirm_decodable(data, kind)
    except images.BadImageError as err:
        return Encoded(None, str(err), None)
    return Encoded(schema.make_example(job.name, data, job.weather, job.ground), None, kind)


def encode_file(job: ChipJob) -> Encoded:
    """The record of ``job``, reading its chip from the local file system."""
    try:
        with open(job.path, "rb", buffering=0) as handle:  # one read of the whole file
            data = handle.read()
    except OSError as err:
        return Encoded(None, unreadable(err), None)
    return encode_bytes(job, data)


UNREADABLE = "cannot read: "


def unreadable(err: OSError) -> str:
    """The skip reason of a chip that cannot be read, the same from every file system."""
    return f"{UNREADABLE}{err.strerror or err}"
