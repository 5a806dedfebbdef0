"""Evaluating a trained model: thresholds chosen on val, scores on test, against a baseline.

Ground thresholds are chosen on the val split (``evaluate.thresholds``); the same
choice is applied to the baseline (majority weather, each ground label scored by its
training frequency), so the comparison is fair. For a person to look at: per-label precision-recall
curves and a gallery of the test chips the model gets most confidently wrong.
Everything here is a pure function of the model and the records: the same model
and data give the same bytes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from amazonia.data.records.manifest import check_manifest, read_manifest
from amazonia.data.records.schema import FEATURE_IMAGE, FEATURE_NAME, feature_spec
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from amazonia.model import augment, error_gallery, pr_curves
from amazonia.model.input_pipeline import load_split, naming_undecodable_chips, records
from amazonia.model.metrics import (
    choose_thresholds,
    prior_scores,
    score,
    weather_confusion,
    weather_confusion_matrix,
)
from amazonia.model.names import OUTPUT_GROUND, OUTPUT_WEATHER
from amazonia.model.preprocessing import decode_rgb, model_input_size

PREDICT_BATCH = 64
BASELINE_WHAT = "majority weather; each ground label scored by its training frequency"


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate stage writes: thresholds, the metrics file, three plot tables, a gallery."""

    thresholds: dict[str, dict[str, float]]
    metrics: dict
    weather_confusion_csv: str
    ground_f2_csv: str
    ground_pr_csv: str  # pr_curves.precision_recall_rows
    errors_png: bytes  # error_gallery.render_gallery


def predict_split(
    model: keras.Model, split_dir: Path | str, tta: str = augment.NONE
) -> tuple[np.ndarray, ...]:
    """``(weather_true, ground_true, weather_prob, ground_prob)`` over a whole split, in record
    order; chips at the model's input size, predictions by :func:`amazonia.model.augment.predict`.

    Raises:
        UndecodableChipError: a stored chip TensorFlow cannot decode (the message names it).
    """
    image_size = model_input_size(model)
    data, _ = load_split(split_dir, image_size, batch_size=PREDICT_BATCH, cache=False)
    truths_w, truths_g, probs_w, probs_g = [], [], [], []
    with naming_undecodable_chips([split_dir], image_size):
        for images, labels in data:
            outputs = augment.predict(model, images, tta)
            truths_w.append(labels[OUTPUT_WEATHER].numpy())
            truths_g.append(labels[OUTPUT_GROUND].numpy())
            probs_w.append(np.asarray(outputs[OUTPUT_WEATHER]))
            probs_g.append(np.asarray(outputs[OUTPUT_GROUND]))
    return tuple(np.concatenate(parts) for parts in (truths_w, truths_g, probs_w, probs_g))


def chips_at(split_dir: Path | str, indices: list[int]) -> dict[int, tuple[str, np.ndarray]]:
    """``{index: (image name, uint8 H x W x 3 image)}`` of the chips at ``indices`` in
    :func:`predict_split`'s order, each its stored file decoded whole (by
    :func:`amazonia.model.preprocessing.decode_rgb`, not resized): what a person looks at."""
    wanted, found = set(indices), {}
    if not wanted:
        return found
    # The same reader as predict_split (one place for the record order); hashes were checked there.
    spec = {key: feature_spec()[key] for key in (FEATURE_NAME, FEATURE_IMAGE)}
    for index, record in records(split_dir, read_manifest(split_dir)).enumerate():
        if int(index) in wanted:
            example = tf.io.parse_single_example(record, spec)
            name = example[FEATURE_NAME].numpy().decode("utf-8")
            found[int(index)] = (name, decode_rgb(example[FEATURE_IMAGE]).numpy())
            if len(found) == len(wanted):
                break
    return found


def error_gallery_png(test: tuple[np.ndarray, ...], thresholds: np.ndarray, split_dir: Path | str) -> bytes:
    """The gallery of the test chips with the most confident mistakes (see :mod:`error_gallery`)."""
    chips = error_gallery.select_chips(*test, thresholds)
    found = chips_at(split_dir, [chip.index for chip in chips])
    return error_gallery.render_gallery([(chip, *found[chip.index]) for chip in chips])


def evaluate_model(
    model: keras.Model,
    records_dir: Path | str,
    *,
    tta: str,
    thresholds: str,
) -> Evaluation:
    """Choose ground thresholds on ``records_dir/val`` by the ``thresholds`` strategy
    (:func:`amazonia.model.metrics.choose_thresholds`), score on ``records_dir/test``,
    compare with the baseline, whose thresholds are chosen the same way. With ``tta``
    ``d4``, every prediction is the average over the chip's eight views."""
    records_dir = Path(records_dir)
    strategy = thresholds
    val = predict_split(model, records_dir / "val", tta)
    test = predict_split(model, records_dir / "test", tta)
    chosen = choose_thresholds(strategy, *val)
    results = score(*test, chosen)

    train = check_manifest(records_dir / "train", verify_hashes=False)
    weather_freq = np.array([train.label_counts[t] for t in LABELS_WEATHER]) / train.examples
    ground_freq = np.array([train.label_counts[t] for t in LABELS_GROUND]) / train.examples
    prior_val = prior_scores(len(val[0]), weather_freq, ground_freq)
    prior_test = prior_scores(len(test[0]), weather_freq, ground_freq)
    prior = score(*test[:2], *prior_test, choose_thresholds(strategy, *val[:2], *prior_val))

    metrics = {
        "test_images": len(test[0]),
        **results,
        "weather_confusion": {
            "labels": list(LABELS_WEATHER),
            "matrix": weather_confusion_matrix(test[0], test[2]),
        },
        "baseline": {
            "f2": prior["f2"],
            "weather_accuracy": prior["weather_accuracy"],
            "weather_macro_f1": prior["weather_macro_f1"],
            "what": BASELINE_WHAT,
        },
        "gain_over_baseline": {
            "f2": round(results["f2"] - prior["f2"], 4),
            "weather_accuracy": round(results["weather_accuracy"] - prior["weather_accuracy"], 4),
        },
    }
    per_label = [{"label": name, "f2": m["f2"]} for name, m in results["ground"].items()]
    return Evaluation(
        thresholds={"ground": dict(zip(LABELS_GROUND, map(float, chosen)))},
        metrics=metrics,
        weather_confusion_csv=to_csv(weather_confusion(test[0], test[2])),
        ground_f2_csv=to_csv(per_label),
        ground_pr_csv=to_csv(pr_curves.precision_recall_rows(test[1], test[3], chosen)),
        errors_png=error_gallery_png(test, chosen, records_dir / "test"),
    )


def to_csv(rows: list[dict]) -> str:
    """Rows of one shape as CSV text with a header, ``\\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
