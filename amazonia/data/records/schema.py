"""The Example schema: the one place that says what a record holds and how it is serialized."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER

if TYPE_CHECKING:
    import tensorflow as tf

SCHEMA_VERSION = 2

FEATURE_IMAGE = "image/encoded"  # the chip file as in data/raw, byte for byte
FEATURE_NAME = "image/name"  # Kaggle's image_name, e.g. b"train_42"
FEATURE_WEATHER = "labels/weather"  # int64 one-hot, len(LABELS_WEATHER)
FEATURE_GROUND = "labels/ground"  # int64 multi-hot, len(LABELS_GROUND)

FEATURE_DESCRIPTIONS = {
    FEATURE_IMAGE: "bytes: the chip file as in data/raw (JPEG, PNG, GIF, BMP, WebP or JPEG XL)",
    FEATURE_NAME: "bytes: image_name",
    FEATURE_WEATHER: f"int64[{len(LABELS_WEATHER)}]: one-hot {list(LABELS_WEATHER)}",
    FEATURE_GROUND: f"int64[{len(LABELS_GROUND)}]: multi-hot {list(LABELS_GROUND)}",
}


def feature_spec() -> dict[str, tf.io.FixedLenFeature]:
    """The ``tf.io.parse_example`` spec of one record."""
    import tensorflow as tf

    return {
        FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
        FEATURE_NAME: tf.io.FixedLenFeature([], tf.string),
        FEATURE_WEATHER: tf.io.FixedLenFeature([len(LABELS_WEATHER)], tf.int64),
        FEATURE_GROUND: tf.io.FixedLenFeature([len(LABELS_GROUND)], tf.int64),
    }


def make_example(name: str, image: bytes, weather: Sequence[int], ground: Sequence[int]) -> bytes:
    """One serialized ``tf.train.Example``, the same bytes in every process, without TensorFlow.

    The bytes are what ``tf.train.Example(...).SerializeToString(deterministic=True)``
    gives (tested): protobuf writes a map field in an order that depends on the
    process's hash seed unless asked for ``deterministic=True``, which sorts the keys;
    without it the same records give different shards, DVC sees a changed output and
    retrains. Encoding the four fields by hand keeps TensorFlow out of the serialize
    workers (a 3 s import and 300 MiB each) and costs a few microseconds a record.

    The wire format (``tensorflow/core/example/{example,feature}.proto``)::

        Example  { Features features = 1; }
        Features { map<string, Feature> feature = 1; }   // entries {key = 1; value = 2}
        Feature  { oneof kind { BytesList bytes_list = 1; Int64List int64_list = 3; } }
        BytesList { repeated bytes value = 1; }
        Int64List { repeated int64 value = 1 [packed = true]; }
    """
    encoded_name = name.encode("utf-8")
    features = {
        FEATURE_IMAGE: _nested(1, *_nested(1, [image], len(image))),
        FEATURE_NAME: _nested(1, *_nested(1, [encoded_name], len(encoded_name))),
        FEATURE_WEATHER: _int64_feature(tuple(weather)),
        FEATURE_GROUND: _int64_feature(tuple(ground)),
    }
    entries: list[bytes] = []
    length = 0
    for key, key_field in _KEY_FIELDS.items():
        pieces, piece_length = _nested(2, *features[key])
        pieces, piece_length = _nested(1, [key_field, *pieces], len(key_field) + piece_length)
        entries += pieces
        length += piece_length
    # Pieces joined once at the end: the image, tens of KB, is copied once, not at every level.
    return b"".join(_nested(1, entries, length)[0])


@functools.lru_cache(maxsize=4096)  # a split has a few hundred distinct label vectors
def _int64_feature(values: tuple[int, ...]) -> tuple[list[bytes], int]:
    packed = _packed_int64(values)
    return _nested(3, [packed], len(packed))


def _nested(number: int, pieces: list[bytes], length: int) -> tuple[list[bytes], int]:
    """``pieces`` (``length`` bytes in all) as the payload of length-delimited field ``number``."""
    header = _varint(number << 3 | 2) + _varint(length)
    return [header, *pieces], length + len(header)


_ONE_BYTE = [bytes([value]) for value in range(0x80)]  # most varints: labels, tags, small lengths


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint; negative int64s as their 64-bit two's complement."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): tag, length, payload."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _packed_int64(values: Sequence[int]) -> bytes:
    """A packed repeated int64 field's value: protobuf omits an empty one."""
    return _field(1, b"".join(_varint(int(v)) for v in values)) if len(values) else b""


# Each map entry's key field, in the sorted order deterministic serialization writes them.
_KEY_FIELDS = {key: _field(1, key.encode("utf-8")) for key in sorted(FEATURE_DESCRIPTIONS)}
