"""One chip and its labels -> the serialized Example of its record, or why it is skipped.

TensorFlow-free (PIL and protobuf's wire format by hand): this runs in the local
writer's worker processes and on Beam's workers, which then send the parent only the
finished record bytes.
"""

from __future__ import annotations

from typing import NamedTuple

from amazonia.data.records import images, schema


class ChipJob(NamedTuple):
    """A chip to encode: a tuple, so a process pool pickles it cheaply."""

    name: str  # Kaggle's image_name
    path: str  # the chip file: a local path, or any URL Beam's filesystems read
    weather: tuple[int, ...]
    ground: tuple[int, ...]


class Encoded(NamedTuple):
    """A chip's record (``example``) or the reason it is skipped (``error``), never both."""

    example: bytes | None
    error: str | None
    converted_from: str | None  # e.g. "PNG/RGBA"; None for an RGB JPEG


def encode_bytes(job: ChipJob, data: bytes, image_size: int, jpeg_quality: int) -> Encoded:
    """The record of ``job`` whose chip file holds ``data``."""
    try:
        chip = images.prepare_chip_bytes(data, image_size, jpeg_quality)
    except images.BadImageError as err:
        return Encoded(None, str(err), None)
    example = schema.make_example(job.name, chip.jpeg, job.weather, job.ground)
    return Encoded(example, None, chip.converted_from)


def encode_file(job: ChipJob, image_size: int, jpeg_quality: int) -> Encoded:
    """The record of ``job``, reading its chip from the local file system."""
    try:
        with open(job.path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        return Encoded(None, unreadable(err), None)
    return encode_bytes(job, data, image_size, jpeg_quality)


def encode_file_job(args: tuple[ChipJob, int, int]) -> Encoded:
    """:func:`encode_file` for ``Pool.imap``: ``(job, image_size, jpeg_quality)``."""
    return encode_file(*args)


UNREADABLE = "cannot read: "


def unreadable(err: OSError) -> str:
    """The skip reason of a chip that cannot be read, the same from every file system."""
    return f"{UNREADABLE}{err.strerror or err}"
