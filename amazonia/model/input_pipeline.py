"""``tf.data`` input pipelines over the serialized TFRecord splits.

Interleaved reads over shards, parallel parse and JPEG decode, seeded shuffle,
batch and prefetch. Decoded uint8 images are cached in memory when they fit, so
from the second epoch on the JPEGs are not decoded again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import tensorflow as tf

from amazonia.data.records.manifest import Manifest, check_manifest
from amazonia.data.records.schema import FEATURE_GROUND, FEATURE_IMAGE, FEATURE_WEATHER, feature_spec

log = logging.getLogger(__name__)


def decode_image(jpeg: tf.Tensor, image_size: int) -> tf.Tensor:
    """JPEG bytes -> uint8 (S, S, 3); records already hold S x S chips."""
    image = tf.io.decode_jpeg(jpeg, channels=3)
    return tf.ensure_shape(image, (image_size, image_size, 3))


def to_model_input(image: tf.Tensor) -> tf.Tensor:
    """uint8 -> float32 in [0, 1], as the article's ``img_to_array(...) / 255.``."""
    return tf.cast(image, tf.float32) / 255.0


def _parse(record: tf.Tensor, image_size: int) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    example = tf.io.parse_single_example(record, feature_spec())
    labels = {
        "weather": tf.cast(example[FEATURE_WEATHER], tf.float32),
        "ground": tf.cast(example[FEATURE_GROUND], tf.float32),
    }
    return decode_image(example[FEATURE_IMAGE], image_size), labels


def load_split(
    split_dir: Path | str,
    image_size: int,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool = True,
    cache_limit_mb: int = 4096,
    verify: bool = True,
) -> tuple[tf.data.Dataset, Manifest]:
    """Batches of ``(float32 images in [0, 1], {"weather", "ground"})`` from a split folder.

    The manifest is checked first (shards present, sizes, counts, image size), so a
    missing or half-written shard stops here with a message instead of mid-epoch.
    """
    manifest = check_manifest(split_dir, image_size=image_size, verify_hashes=verify)
    files = [str(Path(split_dir) / s.file) for s in manifest.shards]
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 4) or 1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    dataset = dataset.map(lambda r: _parse(r, image_size), num_parallel_calls=tf.data.AUTOTUNE)
    decoded_mb = manifest.examples * image_size * image_size * 3 / 2**20
    if cache and decoded_mb <= cache_limit_mb:
        dataset = dataset.cache()
    elif cache:
        log.info("not caching %s: %.0f MiB decoded > %d MiB", split_dir, decoded_mb, cache_limit_mb)
    if shuffle:
        dataset = dataset.shuffle(
            min(manifest.examples, 10_000) or 1, seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.batch(batch_size)
    # Interleave hides the size; Keras wants it to show progress and end epochs cleanly.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-manifest.examples // batch_size)))
    dataset = dataset.map(lambda x, y: (to_model_input(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), manifest
