"""``tf.data`` input pipelines over the serialized TFRecord splits.

Interleaved reads over shards; each chip's stored file decoded and resized to the
model's input size by :func:`amazonia.model.preprocessing.preprocess`, the function the
exported ``serving_bytes`` signature runs, then cached in memory as uint8 when it fits,
so from the second epoch on nothing is decoded again. Training adds a shuffle seeded per
epoch and, with ``train.augment: d4``, one of the chip's eight symmetries
(:mod:`amazonia.model.augment`); then batch, :func:`~amazonia.model.preprocessing.to_model_input`,
prefetch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import tensorflow as tf

from amazonia.common.errors import AmazoniaError
from amazonia.common.tf_errors import tf_error_message
from amazonia.data.records.manifest import Manifest, check_manifest, read_manifest
from amazonia.data.records.schema import (
    FEATURE_GROUND,
    FEATURE_IMAGE,
    FEATURE_NAME,
    FEATURE_WEATHER,
    feature_spec,
)
from amazonia.model import augment as augmentation
from amazonia.model.names import OUTPUT_GROUND, OUTPUT_WEATHER
from amazonia.model.preprocessing import preprocess, to_model_input

log = logging.getLogger(__name__)

# Examples held by the shuffle buffer: the whole split up to this, beyond it a window
# of it (10k decoded 128 px chips are 470 MiB).
SHUFFLE_BUFFER = 10_000


class UndecodableChipError(AmazoniaError):
    """A stored chip that TensorFlow cannot decode; the message names it."""


def _parse(record: tf.Tensor, image_size: int, with_names: bool = False) -> tuple[tf.Tensor, ...]:
    example = tf.io.parse_single_example(record, feature_spec())
    labels = {
        OUTPUT_WEATHER: tf.cast(example[FEATURE_WEATHER], tf.float32),
        OUTPUT_GROUND: tf.cast(example[FEATURE_GROUND], tf.float32),
    }
    image = preprocess(example[FEATURE_IMAGE], image_size)
    return (image, labels, example[FEATURE_NAME]) if with_names else (image, labels)


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
    with_names: bool = False,
    full_batches: bool = False,
) -> tuple[tf.data.Dataset, Manifest]:
    """Batches of ``(float32 images in [0, 1], labels by output name)`` from a split folder,
    chips at ``image_size`` x ``image_size``; with ``with_names``, a third element: the
    chips' image names (bytes), e.g. to caption them.

    In shard order, or with ``shuffle`` in another order each pass, seeded by ``seed``.
    That sequence of orders restarts in every process, so a resumed run would not see
    what an uninterrupted one sees: the train stage uses :func:`load_epochs`.

    The manifest is checked first (shards present, sizes, counts), so a missing or
    half-written shard stops here with a message instead of mid-epoch.
    ``full_batches`` drops a short last batch (see :func:`batches_per_epoch`).
    """
    examples, manifest = _examples(
        split_dir,
        image_size,
        cache,
        cache_limit_mb,
        verify,
        file_seed=seed if shuffle else None,
        with_names=with_names,
    )
    if shuffle:
        examples = examples.shuffle(_shuffle_buffer(manifest), seed=seed, reshuffle_each_iteration=True)
    dataset = examples.batch(batch_size, drop_remainder=full_batches)
    # Interleave hides the size; Keras wants it to show progress and end epochs cleanly.
    dataset = dataset.apply(
        tf.data.experimental.assert_cardinality(
            batches_per_epoch(manifest.examples, batch_size, full_batches)
        )
    )
    dataset = dataset.map(lambda x, *rest: (to_model_input(x), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), manifest


def load_epochs(
    split_dir: Path | str,
    image_size: int,
    *,
    batch_size: int,
    epoch_seeds: Sequence[int],
    file_seed: int,
    augment: str = augmentation.NONE,
    cache: bool = True,
    cache_limit_mb: int = 4096,
    verify: bool = True,
    full_batches: bool = False,
) -> tuple[tf.data.Dataset, Manifest]:
    """Shuffled training batches for ``len(epoch_seeds)`` epochs, one epoch after the other,
    chips at ``image_size`` x ``image_size``; with ``augment`` ``d4``, each example turned
    to one of its eight views (:func:`amazonia.model.augment.random_d4_view`).

    Epoch ``i`` is every example once, in an order fixed by ``epoch_seeds[i]`` alone, and
    the view of its ``n``-th example is drawn by a stateless op from
    ``(epoch_seeds[i], n)``: a run resumed at epoch k in a new process sees exactly the
    batches an uninterrupted run sees from epoch k on. (``Dataset.shuffle`` with
    ``reshuffle_each_iteration=True``, or a random op with its own state, would not: their
    sequences restart in every process.) Shards are read in one order fixed by
    ``file_seed``, cached or not, so ``cache`` changes the speed, never the batches.

    The epochs come as one dataset, which Keras must not restart each epoch: pass
    ``steps_per_epoch=batches_per_epoch(manifest.examples, batch_size, full_batches)`` to ``fit``.
    Its size is left unknown on purpose: a known size makes Keras open a new iterator
    after the last epoch, which would start shuffling an epoch nobody reads.

    Raises:
        ValueError: ``augment`` is neither ``none`` nor ``d4``.
    """
    if augment not in (augmentation.NONE, augmentation.D4):
        raise ValueError(f"augment must be {augmentation.NONE!r} or {augmentation.D4!r}, not {augment!r}")
    examples, manifest = _examples(split_dir, image_size, cache, cache_limit_mb, verify, file_seed=file_seed)
    batches_per_epoch(manifest.examples, batch_size, full_batches)  # raises when nothing is left
    buffer = _shuffle_buffer(manifest)

    def one_epoch(seed: int) -> tf.data.Dataset:
        shuffled = examples.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
        if augment == augmentation.D4:
            # After the cache: each epoch draws its own views of the same decoded chips.
            def turned(position: tf.Tensor, example: tuple) -> tuple:
                key = tf.stack([tf.constant(seed, tf.int64), position])
                return augmentation.random_d4_view(example[0], key), example[1]

            shuffled = shuffled.enumerate().map(turned, num_parallel_calls=tf.data.AUTOTUNE)
        # Batched inside the epoch: a short last batch never mixes two epochs.
        return shuffled.batch(batch_size, drop_remainder=full_batches)

    # Seeds as Python ints, epochs concatenated: a seed tensor (flat_map over the seeds)
    # fails under train.seed 0, where TensorFlow compares the op seed with 0 in Python.
    # Every epoch reads the same ``examples``, so its in-memory cache fills once.
    epochs = [one_epoch(int(seed)) for seed in epoch_seeds] or [one_epoch(0).take(0)]
    dataset = functools.reduce(tf.data.Dataset.concatenate, epochs[1:], epochs[0])
    dataset = dataset.map(lambda x, y: (to_model_input(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), manifest


def batches_per_epoch(examples: int, batch_size: int, full_batches: bool = False) -> int:
    """Batches in one pass over ``examples`` examples: the last one possibly short, or with
    ``full_batches`` dropped (what a tf.distribute strategy needs, see
    :mod:`amazonia.model.distribute`).

    Raises:
        AmazoniaError: ``full_batches`` and fewer examples than one batch.
    """
    if not full_batches:
        return -(-examples // batch_size)
    if examples < batch_size:
        raise AmazoniaError(
            f"{examples} examples do not fill one batch of {batch_size}, and over several replicas "
            "every batch must be full: lower train.batch_size, or add data"
        )
    return examples // batch_size


def records(split_dir: Path | str, manifest: Manifest, file_seed: int | None = None) -> tf.data.Dataset:
    """The serialized records of a split in the order every reader here uses: shards in
    manifest order (or shuffled once by ``file_seed``), interleaved four at a time."""
    files = [str(Path(split_dir) / s.file) for s in manifest.shards]
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if file_seed is not None:
        # One order for every epoch and process: a cache would replay the first pass's
        # order anyway, and an uncached run must read exactly what a cached one does.
        dataset = dataset.shuffle(len(files) or 1, seed=file_seed, reshuffle_each_iteration=False)
    return dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 4) or 1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


@contextlib.contextmanager
def naming_undecodable_chips(split_dirs: Sequence[Path | str], image_size: int) -> Iterator[None]:
    """Turn TensorFlow's error on a chip it cannot decode, raised inside the block (by
    ``fit`` or a loop over a dataset of ``split_dirs``), into an
    :class:`UndecodableChipError` naming the chip, its shard and what to do.

    TensorFlow's message names no chip; on that error only, the splits are scanned (one
    decoding pass, :func:`find_undecodable_chip`). Any other error passes unchanged.
    """
    try:
        yield
    except tf.errors.InvalidArgumentError:
        for split_dir in split_dirs:
            message = find_undecodable_chip(split_dir, image_size)
            if message is not None:
                raise UndecodableChipError(message) from None
        raise


def find_undecodable_chip(split_dir: Path | str, image_size: int) -> str | None:
    """A one-line description of the first chip of a split that :func:`preprocess` cannot
    decode (shard, record, image name, TensorFlow's reason, what to do), or None."""
    split_dir = Path(split_dir)
    for shard in read_manifest(split_dir).shards:
        path = split_dir / shard.file
        indexed = tf.data.TFRecordDataset(str(path)).enumerate()
        decoded = indexed.map(
            lambda index, record: (index, _parse(record, image_size)[0]),
            num_parallel_calls=tf.data.AUTOTUNE,
        ).ignore_errors()
        good = {int(index) for index, _ in decoded.as_numpy_iterator()}
        bad = next((i for i in range(shard.examples) if i not in good), None)
        if bad is None:
            continue
        record = next(iter(tf.data.TFRecordDataset(str(path)).skip(bad).take(1)))
        example = tf.io.parse_single_example(record, feature_spec())
        name = example[FEATURE_NAME].numpy().decode("utf-8", "replace")
        try:
            preprocess(example[FEATURE_IMAGE], image_size)
            reason = "it fails only inside the input pipeline"
        except tf.errors.OpError as err:
            reason = tf_error_message(err)
        return (
            f"{path}: record {bad}, chip {name!r}, cannot be decoded by TensorFlow ({reason}); "
            f"replace or remove that chip in data/raw, then rerun 'dvc repro'"
        )
    return None


def _shuffle_buffer(manifest: Manifest) -> int:
    return min(manifest.examples, SHUFFLE_BUFFER) or 1


def _examples(
    split_dir: Path | str,
    image_size: int,
    cache: bool,
    cache_limit_mb: int,
    verify: bool,
    file_seed: int | None,
    with_names: bool = False,
) -> tuple[tf.data.Dataset, Manifest]:
    """Preprocessed ``(uint8 image, labels[, name])`` of a checked split, shards in order or
    shuffled once by ``file_seed``; cached in memory when asked and they fit."""
    manifest = check_manifest(split_dir, verify_hashes=verify)
    dataset = records(split_dir, manifest, file_seed).map(
        lambda r: _parse(r, image_size, with_names), num_parallel_calls=tf.data.AUTOTUNE
    )
    decoded_mb = manifest.examples * image_size * image_size * 3 / 2**20
    if cache and decoded_mb <= cache_limit_mb:
        dataset = dataset.cache()
    elif cache:
        log.info("not caching %s: %.0f MiB decoded > %d MiB", split_dir, decoded_mb, cache_limit_mb)
    return dataset, manifest
