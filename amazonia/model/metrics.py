"""How the Kaggle competition scored a chip, and the numbers built on it.

Kaggle's metric is F2 (beta = 2) per image over all 17 tags, averaged over images.
Here the weather tag is the argmax of the softmax head and each ground tag is on
when its sigmoid reaches that label's threshold, chosen on the val split by one of
:data:`THRESHOLD_STRATEGIES` (``evaluate.thresholds``, see :func:`choose_thresholds`).
"""

from __future__ import annotations

import numpy as np

from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER

BETA = 2.0
THRESHOLD_GRID = np.round(np.arange(0.02, 0.99, 0.02), 2)
# For calibrated probabilities the F-beta-optimal threshold is F* / (1 + beta^2), F* the
# best F-beta reachable (Lipton et al. 2014, "Thresholding classifiers to maximize F1"):
# at most 1 / (1 + beta^2), 0.2 for Kaggle's F2, and near it for a good model.
F2_OPTIMAL_THRESHOLD = 1 / (1 + BETA**2)
# "shrunk": a label's own tuned threshold weighs n / (n + SHRINK_POSITIVES) against the
# global one, n its positive val chips: half at 30. Measured on the default run (418 val
# chips, 60 bootstrap resamples of val): a label's tuned threshold has a standard deviation
# of 0.16-0.19 with 1-8 positives, 0.02-0.10 with 33-124; at Kaggle scale (~10x the chips)
# agriculture's ~1,200 positives keep 0.98 of its own value.
SHRINK_POSITIVES = 30
# "cross_validated": per-label tuning on each of this many leave-one-fold-out subsets of
# val, averaged; the folds are fixed by FOLD_SEED, so the same predictions give the same
# thresholds.
CV_FOLDS = 5
FOLD_SEED = 0
# Blended thresholds are rounded to 0.01, the step of the precision-recall table
# (amazonia/model/pr_curves.py), so each is one of its rows.
THRESHOLD_DECIMALS = 2
THRESHOLD_STRATEGIES = ("per_label", "fixed", "global", "shrunk", "cross_validated")


def weather_one_hot(weather_prob: np.ndarray) -> np.ndarray:
    """The argmax of each softmax row, one-hot."""
    return np.eye(len(LABELS_WEATHER), dtype=int)[np.argmax(weather_prob, axis=1)]


def predict_tags(weather_prob: np.ndarray, ground_prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """0/1 matrix (images x 17 tags): argmax weather, thresholded ground."""
    return np.hstack([weather_one_hot(weather_prob), (ground_prob >= thresholds).astype(int)])


def f_beta(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, beta: float = BETA) -> np.ndarray:
    """F-beta from counts, elementwise: ``(1 + beta^2) tp / ((1 + beta^2) tp + beta^2 fn + fp)``,
    0 where that is 0 / 0 (nothing true and nothing predicted), as scikit-learn's ``zero_division=0``.
    """
    b2 = beta**2
    return _ratio((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)


def kaggle_f2(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F2 per image, averaged over images (an image with no true and no predicted tag scores 0).

    Args:
        truth: 0/1 matrix, images x tags.
        predicted: 0/1 matrix of the same shape.
    """
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    tp = (truth & predicted).sum(axis=1)
    fp = (~truth & predicted).sum(axis=1)
    fn = (truth & ~predicted).sum(axis=1)
    return float(f_beta(tp, fp, fn).mean())


def per_label_precision_recall_f2(
    truth: np.ndarray, predicted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per column (label) of 0/1 matrices (images x labels), over its images.

    Returns:
        precision ``tp / (tp + fp)``, 0 where the label is never predicted; recall
        ``tp / (tp + fn)``, 0 where it is never true; F2 (:func:`f_beta`); support ``tp + fn``,
        the images it is true for.
    """
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    tp = (truth & predicted).sum(axis=0)
    fp = (~truth & predicted).sum(axis=0)
    fn = (truth & ~predicted).sum(axis=0)
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), f_beta(tp, fp, fn), tp + fn


def confusion_counts(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """``counts[i, j]``: the images of class ``i`` predicted as class ``j`` (classes ``0..n_classes-1``)."""
    return np.bincount(actual * n_classes + predicted, minlength=n_classes**2).reshape(n_classes, n_classes)


def macro_f1(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """F1 of each class ``0..n_classes-1`` (one vs the rest), averaged over the classes; a class
    neither true nor predicted for any image scores 0 and counts in the mean."""
    counts = confusion_counts(actual, predicted, n_classes)
    tp = np.diag(counts)
    return float(f_beta(tp, counts.sum(axis=0) - tp, counts.sum(axis=1) - tp, beta=1.0).mean())


def choose_thresholds(
    strategy: str,
    weather_true: np.ndarray,
    ground_true: np.ndarray,
    weather_prob: np.ndarray,
    ground_prob: np.ndarray,
) -> np.ndarray:
    """One threshold per ground label, chosen on the given (val) predictions by ``strategy``:

    - ``per_label``: :func:`tune_thresholds`, each label its own best on val;
    - ``fixed``: :data:`F2_OPTIMAL_THRESHOLD` (0.2) for every label, val unused;
    - ``global``: one value for every label, the best on val (:func:`tune_global_threshold`);
    - ``shrunk``: per-label, pulled toward the global value by support (:func:`shrunk_thresholds`);
    - ``cross_validated``: per-label, averaged over folds of val (:func:`cross_validated_thresholds`).

    Raises:
        ValueError: an unknown ``strategy``.
    """
    args = (weather_true, ground_true, weather_prob, ground_prob)
    if strategy == "per_label":
        return tune_thresholds(*args)
    if strategy == "fixed":
        return np.full(len(LABELS_GROUND), F2_OPTIMAL_THRESHOLD)
    if strategy == "global":
        return np.full(len(LABELS_GROUND), tune_global_threshold(*args))
    if strategy == "shrunk":
        return shrunk_thresholds(*args)
    if strategy == "cross_validated":
        return cross_validated_thresholds(*args)
    raise ValueError(f"unknown threshold strategy {strategy!r}; one of {', '.join(THRESHOLD_STRATEGIES)}")


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


def tune_global_threshold(
    weather_true: np.ndarray, ground_true: np.ndarray, weather_prob: np.ndarray, ground_prob: np.ndarray
) -> float:
    """The one grid threshold for all ground labels that maximises the Kaggle F2 (ties
    keep the value closest to :data:`F2_OPTIMAL_THRESHOLD`)."""
    weather_true = weather_true.astype(bool)
    ground_true = ground_true.astype(bool)
    weather_pred = weather_one_hot(weather_prob).astype(bool)
    # Weather's counts per image do not depend on the threshold.
    tp_w = (weather_true & weather_pred).sum(1)
    fp_w = (~weather_true & weather_pred).sum(1)
    fn_w = (weather_true & ~weather_pred).sum(1)
    grid = THRESHOLD_GRID[np.argsort(np.abs(THRESHOLD_GRID - F2_OPTIMAL_THRESHOLD), kind="stable")]
    on = ground_prob[:, :, None] >= grid[None, None, :]  # images x labels x grid
    positive = ground_true[:, :, None]
    tp = tp_w[:, None] + (on & positive).sum(1)
    fp = fp_w[:, None] + (on & ~positive).sum(1)
    fn = fn_w[:, None] + (~on & positive).sum(1)
    return float(grid[int(np.argmax(_mean_f2(tp, fp, fn)))])


def shrunk_thresholds(
    weather_true: np.ndarray, ground_true: np.ndarray, weather_prob: np.ndarray, ground_prob: np.ndarray
) -> np.ndarray:
    """Per-label thresholds (:func:`tune_thresholds`) pulled toward the global one
    (:func:`tune_global_threshold`) by support: label ``j`` with ``n`` positive chips gets
    ``(n t_j + k t_global) / (n + k)``, ``k`` = :data:`SHRINK_POSITIVES`."""
    args = (weather_true, ground_true, weather_prob, ground_prob)
    own, common = tune_thresholds(*args), tune_global_threshold(*args)
    positives = ground_true.astype(bool).sum(axis=0)
    weight = positives / (positives + SHRINK_POSITIVES)
    return np.round(weight * own + (1 - weight) * common, THRESHOLD_DECIMALS)


def cross_validated_thresholds(
    weather_true: np.ndarray,
    ground_true: np.ndarray,
    weather_prob: np.ndarray,
    ground_prob: np.ndarray,
    folds: int = CV_FOLDS,
) -> np.ndarray:
    """Per-label thresholds (:func:`tune_thresholds`) tuned ``folds`` times, each time on
    val without one fold (seeded by :data:`FOLD_SEED`), and averaged: the affordable
    form of tuning on out-of-fold predictions, steadier than one tuning on all of val.
    Fewer chips than folds: :func:`tune_thresholds` on them all."""
    n = len(weather_true)
    if n < folds:
        return tune_thresholds(weather_true, ground_true, weather_prob, ground_prob)
    fold_of = np.random.default_rng(FOLD_SEED).permutation(n) % folds
    tuned = [
        tune_thresholds(weather_true[keep], ground_true[keep], weather_prob[keep], ground_prob[keep])
        for keep in (fold_of != k for k in range(folds))
    ]
    return np.round(np.mean(tuned, axis=0), THRESHOLD_DECIMALS)


def _mean_f2(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-image F2 from counts (images x candidates), averaged over images."""
    return f_beta(tp, fp, fn).mean(axis=0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.zeros(np.shape(numerator)), where=denominator > 0)


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
    precision, recall, f2, support = per_label_precision_recall_f2(
        ground_true, predicted[:, len(LABELS_WEATHER) :]
    )
    return {
        "f2": round(kaggle_f2(truth, predicted), 4),
        "weather_accuracy": round(float(np.mean(w_true == w_pred)), 4),
        "weather_macro_f1": round(macro_f1(w_true, w_pred, len(LABELS_WEATHER)), 4),
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
    counts = confusion_counts(np.argmax(weather_true, 1), np.argmax(weather_prob, 1), len(LABELS_WEATHER))
    return counts.tolist()


def prior_scores(
    n_images: int, weather_freq: np.ndarray, ground_freq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Trivial baseline scores: every image gets the training frequencies.

    Argmax weather is then the majority class; a ground label is predicted when its
    frequency reaches its (tuned) threshold.
    """
    return np.tile(weather_freq, (n_images, 1)), np.tile(ground_freq, (n_images, 1))
