"""TFRecord framing: one shard file written through any binary file object, no TensorFlow.

Each record is ``uint64 length, uint32 masked_crc32c(length), data, uint32
masked_crc32c(data)``, little-endian: byte for byte what ``tf.io.TFRecordWriter``
writes without compression (tested). Taking a file object, not a path, lets the local
writer use ``open()`` and the Beam runner ``FileSystems.create()`` (any object store).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import BinaryIO

import google_crc32c

FRAMING_BYTES = 16  # length (8) and two CRCs (4 + 4) around each record
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C: rotated right by 15 bits, plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """``record`` with its TFRecord length and checksums around it."""
    length = struct.pack("<Q", len(record))
    return b"".join(
        (length, struct.pack("<I", masked_crc32c(length)), record, struct.pack("<I", masked_crc32c(record)))
    )


@dataclass(frozen=True)
class ShardStats:
    examples: int
    bytes: int
    sha256: str


class ShardFile:
    """Writes framed records into ``handle``, counting them and hashing as it goes, so a
    finished shard need not be read back for the manifest. The caller closes ``handle``."""

    def __init__(self, handle: BinaryIO):
        self._handle = handle
        self._digest = hashlib.sha256()
        self._examples = 0
        self._bytes = 0

    def write(self, record: bytes) -> None:
        length = struct.pack("<Q", len(record))
        for piece in (
            length + struct.pack("<I", masked_crc32c(length)),
            record,
            struct.pack("<I", masked_crc32c(record)),
        ):
            self._handle.write(piece)  # the record is not copied into a framed one
            self._digest.update(piece)
        self._examples += 1
        self._bytes += len(record) + FRAMING_BYTES

    def stats(self) -> ShardStats:
        return ShardStats(self._examples, self._bytes, self._digest.hexdigest())
