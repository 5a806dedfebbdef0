"""How the Kaggle competition scored a chip, and the numbers built on it.

Kaggle's metric is F2 (beta = 2) per image over all 17 tags, averaged over images.
Here the weather tag is the argmax of the softmax head and each ground tag is on
when its sigmoid reaches that label's threshold.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, fbeta_score, precision_recall_fscore_support

from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER

BETA = 2.0
THRESHOLD_GRID = np.round(np.arange(0.02, 0.99, 0.02), 2)


def weather_one_hot(weather_prob: np.ndarray) -> np.ndarray:
    """The argmax of each softmax row, one-hot."""
    return np.eye(len(LABELS_WEATHER), dtype=int)[np.argmax(weather_prob, axis=1)]


def predict_tags(weather_prob: np.ndarray, ground_prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """0/1 matrix (images x 17 tags): argmax weather, thresholded ground."""
    return np.hstack([weather_one_hot(weather_prob), (ground_prob >= thresholds).astype(int)])


def kaggle_f2(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F2 per image, averaged over images (an image with no true and no predicted tag scores 0)."""
    return float(fbeta_score(truth, predicted, beta=BETA, average="samples", zero_division=0))


def tune_thresholds(
    weather_true: np.ndarray,
    ground_true: np.ndarray,
    weather_prob: np.ndarray,
    ground_prob: np.ndarray,
    passes: int = 2,
) -> np.ndarray:
    """Per-label ground thresholds that maximise the Kaggle F2 (coordinate ascent).

    Starts at 0.5 everywhere; each label in turn takes the grid value that scores best
    with the others fixed (ties keep the value closest to 0.5, for stability).
    """
    truth = np.hstack([weather_true, ground_true]).astype(bool)
    ground_true = ground_true.astype(bool)
    weather_pred = weather_one_hot(weather_prob).astype(bool)
    thresholds = np.full(len(LABELS_GROUND), 0.5)
    grid = THRESHOLD_GRID[np.argsort(np.abs(THRESHOLD_GRID - 0.5), kind="stable")]
    for _ in range(passes):
        for label in range(len(LABELS_GROUND)):
            predicted = np.hstack([weather_pred, ground_prob >= thresholds])
            column = len(LABELS_WEATHER) + label
            others = np.ones(truth.shape[1], dtype=bool)
            others[column] = False
            tp = (truth & predicted)[:, others].sum(1)[:, None]
            fp = (~truth & predicted)[:, others].sum(1)[:, None]
            fn = (truth & ~predicted)[:, others].sum(1)[:, None]
            on = ground_prob[:, label][:, None] >= grid[None, :]  # images x grid
            positive = ground_true[:, label][:, None]
            scores = _mean_f2(tp + (on & positive), fp + (on & ~positive), fn + (~on & positive))
            thresholds[label] = grid[int(np.argmax(scores))]
    return thresholds


def _mean_f2(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-image F2 from counts (images x candidates), averaged over images."""
    b2 = BETA**2
    denominator = (1 + b2) * tp + b2 * fn + fp
    f2 = np.divide((1 + b2) * tp, denominator, out=np.zeros(tp.shape), where=denominator > 0)
    return f2.mean(axis=0)


def score(
    weather_true: np.ndarray,
    ground_true: np.ndarray,
    weather_prob: np.ndarray,
    ground_prob: np.ndarray,
    thresholds: np.ndarray,
) -> dict:
    """Kaggle F2, weather accuracy and macro F1, per-label precision/recall/F2."""
    truth = np.hstack([weather_true, ground_true]).astype(int)
    predicted = predict_tags(weather_prob, ground_prob, thresholds)
    w_true, w_pred = np.argmax(weather_true, axis=1), np.argmax(weather_prob, axis=1)
    labels = list(range(len(LABELS_WEATHER)))
    precision, recall, f2, support = precision_recall_fscore_support(
        ground_true.astype(int), predicted[:, len(LABELS_WEATHER) :], beta=BETA, average=None, zero_division=0
    )
    return {
        "f2": round(kaggle_f2(truth, predicted), 4),
        "weather_accuracy": round(float(np.mean(w_true == w_pred)), 4),
        "weather_macro_f1": round(
            float(f1_score(w_true, w_pred, labels=labels, average="macro", zero_division=0)), 4
        ),
        "ground": {
            name: {
                "precision": round(float(p), 4),
                "recall": round(float(r), 4),
                "f2": round(float(f), 4),
                "support": int(s),
            }
            for name, p, r, f, s in zip(LABELS_GROUND, precision, recall, f2, support)
        },
    }


def weather_confusion(weather_true: np.ndarray, weather_prob: np.ndarray) -> list[dict[str, str]]:
    """One ``{actual, predicted}`` row per image, for DVC's confusion-matrix template."""
    actual = np.argmax(weather_true, axis=1)
    predicted = np.argmax(weather_prob, axis=1)
    return [{"actual": LABELS_WEATHER[a], "predicted": LABELS_WEATHER[p]} for a, p in zip(actual, predicted)]


def weather_confusion_matrix(weather_true: np.ndarray, weather_prob: np.ndarray) -> list[list[int]]:
    """Counts, rows = actual, columns = predicted, in vocabulary order."""
    labels = list(range(len(LABELS_WEATHER)))
    matrix = confusion_matrix(np.argmax(weather_true, 1), np.argmax(weather_prob, 1), labels=labels)
    return matrix.tolist()


def prior_scores(
    n_images: int, weather_freq: np.ndarray, ground_freq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Trivial baseline scores: every image gets the training frequencies.

    Argmax weather is then the majority class; a ground label is predicted when its
    frequency reaches its (tuned) threshold.
    """
    return np.tile(weather_freq, (n_images, 1)), np.tile(ground_freq, (n_images, 1))
