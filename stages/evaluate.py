"""Stage evaluate: the Kaggle F2 and friends on the test split, against trivial baselines.

Ground thresholds are tuned on the val split (saved to models/thresholds.json for
export and serving); the same tuning is applied to the baselines, so the
comparison is fair.
"""

import csv
import io

import keras
import numpy as np

from amazonia.dataset import load_split
from amazonia.files import write_json_atomic, write_text_atomic
from amazonia.labels import LABELS_GROUND, LABELS_WEATHER
from amazonia.metrics import prior_scores, score, tune_thresholds, weather_confusion, weather_confusion_matrix
from amazonia.params import load_params
from amazonia.paths import EVAL_JSON, EVAL_PLOTS_DIR, MODEL_KERAS, RECORDS_DIR, THRESHOLDS_JSON
from amazonia.records import check_manifest
from amazonia.stage import run_stage


def predict_split(model: keras.Model, split: str, image_size: int) -> tuple[np.ndarray, ...]:
    """(weather_true, ground_true, weather_prob, ground_prob) over a whole split."""
    data, _ = load_split(RECORDS_DIR / split, image_size, batch_size=64, cache=False)
    truths_w, truths_g, probs_w, probs_g = [], [], [], []
    for images, labels in data:
        outputs = model(images, training=False)
        truths_w.append(labels["weather"].numpy())
        truths_g.append(labels["ground"].numpy())
        probs_w.append(np.asarray(outputs["weather"]))
        probs_g.append(np.asarray(outputs["ground"]))
    return tuple(np.concatenate(parts) for parts in (truths_w, truths_g, probs_w, probs_g))


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main() -> None:
    image_size = load_params().serialize.image_size
    model = keras.saving.load_model(MODEL_KERAS)
    val = predict_split(model, "val", image_size)
    test = predict_split(model, "test", image_size)
    thresholds = tune_thresholds(*val)
    results = score(*test, thresholds)

    train = check_manifest(RECORDS_DIR / "train", image_size, verify_hashes=False)
    weather_freq = np.array([train.label_counts[t] for t in LABELS_WEATHER]) / train.examples
    ground_freq = np.array([train.label_counts[t] for t in LABELS_GROUND]) / train.examples
    prior_val = prior_scores(len(val[0]), weather_freq, ground_freq)
    prior_test = prior_scores(len(test[0]), weather_freq, ground_freq)
    prior = score(*test[:2], *prior_test, tune_thresholds(*val[:2], *prior_val))

    write_json_atomic(THRESHOLDS_JSON, {"ground": dict(zip(LABELS_GROUND, map(float, thresholds)))})
    write_json_atomic(
        EVAL_JSON,
        {
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
                "what": "majority weather; each ground label scored by its training frequency",
            },
            "gain_over_baseline": {
                "f2": round(results["f2"] - prior["f2"], 4),
                "weather_accuracy": round(results["weather_accuracy"] - prior["weather_accuracy"], 4),
            },
        },
    )
    write_text_atomic(EVAL_PLOTS_DIR / "weather_confusion.csv", to_csv(weather_confusion(test[0], test[2])))
    per_label = [{"label": name, "f2": m["f2"]} for name, m in results["ground"].items()]
    write_text_atomic(EVAL_PLOTS_DIR / "ground_f2.csv", to_csv(per_label))


if __name__ == "__main__":
    run_stage(main)
