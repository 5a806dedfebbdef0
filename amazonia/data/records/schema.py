"""The Example schema: the one place that says what a record holds and how it is serialized."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER

if TYPE_CHECKING:
    import tensorflow as tf

SCHEMA_VERSION = 1

FEATURE_IMAGE = "image/encoded"  # JPEG bytes, RGB, image_size x image_size
FEATURE_NAME = "image/name"  # Kaggle's image_name, e.g. b"train_42"
FEATURE_WEATHER = "labels/weather"  # int64 one-hot, len(LABELS_WEATHER)
FEATURE_GROUND = "labels/ground"  # int64 multi-hot, len(LABELS_GROUND)

FEATURE_DESCRIPTIONS = {
    FEATURE_IMAGE: "bytes: RGB JPEG, image_size x image_size",
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


def make_example(name: str, jpeg: bytes, weather: Sequence[int], ground: Sequence[int]) -> bytes:
    """One serialized ``tf.train.Example``, the same bytes in every process.

    Protobuf writes a map field in an order that depends on the process's hash
    seed unless asked for ``deterministic=True``; without it, the same records give
    different shards, DVC sees a changed output and retrains.
    """
    import tensorflow as tf

    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _ints(values: Sequence[int]) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    features = {
        FEATURE_IMAGE: _bytes(jpeg),
        FEATURE_NAME: _bytes(name.encode("utf-8")),
        FEATURE_WEATHER: _ints(weather),
        FEATURE_GROUND: _ints(ground),
    }
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)
