"""Input pipeline and training throughput: ours against the original article's loaders.

Input: images/s delivered as float32 batches at S = 128 by (a) our ``tf.data``
pipeline over TFRecords that hold each 256 px chip's original file
(:func:`amazonia.model.input_pipeline.load_split`: decode, resize to S, the first epoch;
then from its decoded cache; then the cache with ``train.augment: d4``), (b) the
article's ``keras.utils.Sequence`` that runs ``img_to_array(load_img(path,
target_size=(S, S))) / 255.`` per chip, and (c) the article's reader of float32
TFRecords. Same chips, same run, warm page cache, one full pass each.

Training: images/s of ``model.fit`` (the article model at S, ``train.precision``'s
default) fed by our uncached pipeline against the same model fed from in-memory
tensors; the goal (>= 0.9) says the input never starves training, not even in the
first epoch, when every chip is decoded.
"""

from __future__ import annotations

import logging
import math
import shutil

import numpy as np

from bench.common import (
    WORK_DIR,
    Settings,
    chip_set,
    cpu_busy_percent,
    machine_description,
    markdown_table,
    save_results,
    timer,
    warm_file_cache,
)
from bench.serialize import IMAGE_SIZE, SHARD_MB, article_serialize

log = logging.getLogger(__name__)

BATCH_SIZE = 32
TRAIN_IMAGES = 1024  # per timed training epoch; CPU training is ~100 images/s
GOAL_INPUT_SPEEDUP = 3.0
GOAL_TRAINING_RATIO = 0.9
SCRATCH = WORK_DIR / "input_pipeline"
STORED_SIZE = 256  # the records hold each chip's original 256 px file, as Kaggle's


def article_sequence(paths: list, labels: tuple[np.ndarray, np.ndarray], size: int):
    """The article's loader: a Sequence decoding and scaling each chip in Python."""
    import keras
    from keras.utils import img_to_array, load_img

    class PlanetSequence(keras.utils.Sequence):
        def __len__(self) -> int:
            return math.ceil(len(paths) / BATCH_SIZE)

        def __getitem__(self, index: int):
            batch = slice(index * BATCH_SIZE, (index + 1) * BATCH_SIZE)
            images = np.array(
                [img_to_array(load_img(p, target_size=(size, size))) / 255.0 for p in paths[batch]]
            )
            return images, {"weather": labels[0][batch], "ground": labels[1][batch]}

    return PlanetSequence()


def article_float_records(path, size: int):
    """The article's reader of float32 TFRecords (written by ``article_serialize``)."""
    import tensorflow as tf

    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "weather_labels": tf.io.FixedLenFeature([4], tf.int64),
        "ground_labels": tf.io.FixedLenFeature([13], tf.int64),
    }

    def parse(record):
        example = tf.io.parse_single_example(record, spec)
        image = tf.reshape(tf.io.decode_raw(example["image"], tf.float32), (size, size, 3))
        return image, {"weather": example["weather_labels"], "ground": example["ground_labels"]}

    return tf.data.TFRecordDataset(str(path)).map(parse).batch(BATCH_SIZE)


def images_per_s(batches, n: int) -> float:
    """Pull every batch once; images/s."""
    with timer() as took:
        count = sum(int(np.shape(x)[0]) for x, _ in batches)
    if count != n:
        raise RuntimeError(f"loader delivered {count} images, expected {n}")
    return n / took.seconds


def measure_input(chips, n: int, size: int) -> dict:
    from amazonia.data.labels import parse_vector
    from amazonia.data.records.writer import write_split
    from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
    from amazonia.model.input_pipeline import batches_per_epoch, load_epochs, load_split

    rows = chips.head(n)
    paths = chips.paths(rows)
    warm_file_cache(paths)
    labels = (
        np.array([parse_vector(r.weather_labels, len(LABELS_WEATHER)) for r in rows], dtype=np.float32),
        np.array([parse_vector(r.ground_labels, len(LABELS_GROUND)) for r in rows], dtype=np.float32),
    )
    records = SCRATCH / "ours"
    write_split(rows, chips.root, records, split="train", shard_mb=SHARD_MB)
    article_serialize(rows, chips.root, SCRATCH / "article.tfrecord", size)
    warm_file_cache(records.iterdir())
    warm_file_cache([SCRATCH / "article.tfrecord"])

    busy = cpu_busy_percent()
    sequence = article_sequence([str(p) for p in paths], labels, size)
    results = {
        "cpu_busy_percent_before": busy,
        "article_sequence": images_per_s((sequence[i] for i in range(len(sequence))), n),
        "article_float_tfrecord": images_per_s(article_float_records(SCRATCH / "article.tfrecord", size), n),
    }
    ours, _ = load_split(records, size, batch_size=BATCH_SIZE, shuffle=True, seed=0, cache=False)
    results["ours_tfdata"] = images_per_s(ours, n)
    cached, _ = load_split(records, size, batch_size=BATCH_SIZE, shuffle=True, seed=0, cache=True)
    images_per_s(cached, n)  # first pass fills the cache
    results["ours_tfdata_cached"] = images_per_s(cached, n)
    # Two epochs of one dataset, as training reads them: the second from the cache, turned.
    turned, manifest = load_epochs(
        records, size, batch_size=BATCH_SIZE, epoch_seeds=[1, 2], file_seed=0, augment="d4"
    )
    batches = iter(turned)
    for _ in range(batches_per_epoch(manifest.examples, BATCH_SIZE)):
        next(batches)  # the first epoch fills the cache
    results["ours_tfdata_cached_d4"] = images_per_s(batches, n)
    results["speedup_vs_sequence"] = results["ours_tfdata"] / results["article_sequence"]
    return results


def measure_training(size: int) -> dict:
    """Same model and batches: fed by our uncached pipeline (every chip decoded and
    resized each epoch), then by tensors already in memory; at ``train.precision``'s default."""
    import keras
    import tensorflow as tf

    from amazonia.common.params import TrainParams
    from amazonia.model.distribute import set_precision
    from amazonia.model.input_pipeline import load_split
    from amazonia.model.network import build_model, compile_model

    precision = TrainParams().precision
    pipeline, _ = load_split(SCRATCH / "ours", size, batch_size=BATCH_SIZE, shuffle=True, seed=0, cache=False)
    pipeline = pipeline.take(TRAIN_IMAGES // BATCH_SIZE)
    images, weather, ground = [], [], []
    for x, y in pipeline:
        images.append(x.numpy())
        weather.append(y["weather"].numpy())
        ground.append(y["ground"].numpy())
    tensors = tf.data.Dataset.from_tensor_slices(
        (np.concatenate(images), {"weather": np.concatenate(weather), "ground": np.concatenate(ground)})
    ).batch(BATCH_SIZE)
    n = sum(len(i) for i in images)

    def fit_rate(data) -> float:
        model = compile_model(build_model(size), 1e-3)
        model.fit(data, epochs=1, verbose=0)  # tracing and warm-up
        with timer() as took:
            model.fit(data, epochs=1, verbose=0)
        return n / took.seconds

    set_precision(precision)
    try:
        from_pipeline = fit_rate(pipeline)
        from_memory = fit_rate(tensors)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return {
        "images": n,
        "precision": precision,
        "pipeline": from_pipeline,
        "in_memory": from_memory,
        "ratio": from_pipeline / from_memory,
    }


def format_report(results: dict, n: int) -> str:
    i, t = results["input"], results["training"]
    input_rows = [
        ("article: keras Sequence (load_img / 255.)", f"{i['article_sequence']:,.0f}", "1.0×"),
        (
            "article: float32 TFRecords",
            f"{i['article_float_tfrecord']:,.0f}",
            f"{i['article_float_tfrecord'] / i['article_sequence']:.1f}×",
        ),
        (
            f"ours: decode {STORED_SIZE} px originals + resize (first epoch)",
            f"{i['ours_tfdata']:,.0f}",
            f"{i['speedup_vs_sequence']:.1f}×",
        ),
        (
            "ours, decoded cache (epoch ≥ 2)",
            f"{i['ours_tfdata_cached']:,.0f}",
            f"{i['ours_tfdata_cached'] / i['article_sequence']:.1f}×",
        ),
        (
            "ours, decoded cache + d4 augmentation",
            f"{i['ours_tfdata_cached_d4']:,.0f}",
            f"{i['ours_tfdata_cached_d4'] / i['article_sequence']:.1f}×",
        ),
    ]
    met = "met" if i["speedup_vs_sequence"] >= GOAL_INPUT_SPEEDUP else "not met"
    met_t = "met" if t["ratio"] >= GOAL_TRAINING_RATIO else "not met"
    return "\n".join(
        [
            f"## Input pipeline: {n:,} chips at {IMAGE_SIZE}×{IMAGE_SIZE}, batch {BATCH_SIZE}",
            "",
            markdown_table(["loader", "images/s", "vs Sequence"], input_rows),
            "",
            f"- goal ≥ {GOAL_INPUT_SPEEDUP:g}× the Sequence (uncached first epoch): {met}",
            "",
            f"## Training throughput: {t['images']:,} images per epoch, article model, {t['precision']}",
            "",
            markdown_table(
                ["fed by", "images/s"],
                [
                    (
                        "our TFRecord pipeline, uncached (decode + resize every epoch)",
                        f"{t['pipeline']:,.0f}",
                    ),
                    ("in-memory tensors", f"{t['in_memory']:,.0f}"),
                ],
            ),
            "",
            f"- ratio {t['ratio']:.2f} (goal ≥ {GOAL_TRAINING_RATIO:g}: {met_t})",
        ]
    )


def run(settings: Settings) -> str:
    """Measure, save ``bench/.work/input_pipeline.json`` and return the markdown report."""
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    chips = chip_set(settings.n, settings.seed)
    results = {
        "input": measure_input(chips, settings.n, IMAGE_SIZE),
        "training": measure_training(IMAGE_SIZE),
    }
    shutil.rmtree(SCRATCH, ignore_errors=True)
    save_results("input_pipeline", settings, results)
    return format_report(results, settings.n)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"Machine: {machine_description()}\n")
    print(run(Settings.from_env()))
