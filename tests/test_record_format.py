"""The TensorFlow-free record format against TensorFlow's own: Examples, TFRecord framing,
shard planning. The writers rely on these bytes being TensorFlow's."""

import io
import random

import pytest
import tensorflow as tf

from amazonia.data.records.planner import ShardPlanner, plan_shards
from amazonia.data.records.schema import (
    FEATURE_GROUND,
    FEATURE_IMAGE,
    FEATURE_NAME,
    FEATURE_WEATHER,
    make_example,
)
from amazonia.data.records.tfrecord import FRAMING_BYTES, ShardFile, frame


def tf_example(name, jpeg, weather, ground):
    def _bytes(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    feature = {
        FEATURE_IMAGE: _bytes(jpeg),
        FEATURE_NAME: _bytes(name.encode("utf-8")),
        FEATURE_WEATHER: _ints(weather),
        FEATURE_GROUND: _ints(ground),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


# Lengths around every varint boundary (1, 2, 3 bytes) of the JPEG field and its parents.
LENGTHS = [0, 1, 100, 127, 128, 16_360, 16_383, 16_384, 70_000]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize(
    "weather, ground",
    [([0, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1]), ([], []), ([-1, 2**40, 0], [300])],
)
def test_examples_are_tensorflows_deterministic_bytes(length, weather, ground):
    jpeg = random.Random(length).randbytes(length)
    name = f"train_{length}_é"
    assert make_example(name, jpeg, weather, ground) == tf_example(name, jpeg, weather, ground)


def test_shards_are_tensorflows_tfrecord_bytes(tmp_path):
    rng = random.Random(0)
    records = [rng.randbytes(n) for n in (0, 1, 5_000, 300, 70_000)]
    reference = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(reference)) as writer:
        for record in records:
            writer.write(record)
    buffer = io.BytesIO()
    shard = ShardFile(buffer)
    for record in records:
        shard.write(record)
    assert buffer.getvalue() == reference.read_bytes()
    stats = shard.stats()
    assert (stats.examples, stats.bytes) == (len(records), reference.stat().st_size)
    assert [len(frame(r)) for r in records] == [len(r) + FRAMING_BYTES for r in records]
    assert list(tf.data.TFRecordDataset(str(reference)).as_numpy_iterator()) == records


def test_a_shard_closes_when_the_next_record_would_overflow_it():
    planner = ShardPlanner(shard_bytes=100)
    # 60 + 16 framing; 76 + 30 > 100: next shard; a record larger than a shard gets one alone.
    assert [planner.assign(n) for n in (60, 30, 20, 500, 10)] == [0, 1, 1, 2, 3]
    assert planner.shards == 4
    assert plan_shards([60, 30, 20, 500, 10], 100) == ([0, 1, 1, 2, 3], 4)
    assert plan_shards([], 100) == ([], 0)
