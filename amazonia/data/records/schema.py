"""The Example schema: the one place that says what a record holds and how it is serialized."""

from __future__ import annotations

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
    features = {
        FEATURE_IMAGE: _field(1, _field(1, image)),
        FEATURE_NAME: _field(1, _field(1, name.encode("utf-8"))),
        FEATURE_WEATHER: _field(3, _packed_int64(weather)),
        FEATURE_GROUND: _field(3, _packed_int64(ground)),
    }
    entries = b"".join(
        _field(1, _field(1, key.encode("utf-8")) + _field(2, value))
        for key, value in sorted(features.items())
    )
    return _field(1, entries)


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint; negative int64s as their 64-bit two's complement."""
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
