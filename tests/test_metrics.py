import numpy as np
import pytest

from amazonia.model.metrics import (
    CV_FOLDS,
    F2_OPTIMAL_THRESHOLD,
    FOLD_SEED,
    SHRINK_POSITIVES,
    THRESHOLD_GRID,
    THRESHOLD_STRATEGIES,
    choose_thresholds,
    confusion_counts,
    kaggle_f2,
    macro_f1,
    per_label_precision_recall_f2,
    predict_tags,
    prior_scores,
    score,
    tune_global_threshold,
    tune_thresholds,
)


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    n = 300
    weather_true = np.eye(4)[rng.choice(4, n, p=[0.7, 0.05, 0.07, 0.18])]
    ground_true = (rng.random((n, 13)) < np.linspace(0.05, 0.9, 13)).astype(int)
    weather_prob = np.clip(weather_true * 0.5 + rng.random((n, 4)) * 0.6, 1e-3, None)
    weather_prob /= weather_prob.sum(1, keepdims=True)
    ground_prob = np.clip(ground_true * 0.25 + rng.random((n, 13)) * 0.75, 0, 1)
    return weather_true, ground_true, weather_prob, ground_prob


def test_kaggle_f2_by_hand():
    truth = np.array([[1, 0, 1, 1], [0, 1, 0, 0]])
    predicted = np.array([[1, 0, 1, 0], [0, 1, 1, 0]])
    # image 1: tp=2 fn=1 fp=0 -> 5*2/(5*2+4*1) ; image 2: tp=1 fp=1 -> 5/(5+1)
    assert kaggle_f2(truth, predicted) == pytest.approx((10 / 14 + 5 / 6) / 2)


def test_kaggle_f2_scores_an_image_with_nothing_true_and_nothing_predicted_zero():
    truth = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 1, 0]])
    predicted = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    # 0/0 scores 0 (Kaggle, scikit-learn's zero_division=0); a perfect image 1; a false
    # tag on an empty image 0; an image with its tags all missed 0.
    assert kaggle_f2(truth, predicted) == (0 + 1 + 0 + 0) / 4


def test_per_label_precision_recall_f2_are_zero_where_undefined():
    truth = np.array([[1, 0, 0, 1], [1, 0, 0, 1], [0, 0, 0, 0]])
    predicted = np.array([[0, 1, 0, 1], [0, 0, 0, 1], [0, 1, 0, 1]])
    precision, recall, f2, support = per_label_precision_recall_f2(truth, predicted)
    # Label 0: true twice, never predicted: precision 0/0 -> 0, recall 0. Label 1: predicted
    # twice, never true: recall 0/0 -> 0. Label 2: neither: all 0. Label 3: tp 2, fp 1, fn 0:
    # precision 2/3, recall 1, F2 = 5*2 / (5*2 + 4*0 + 1) = 10/11.
    assert precision.tolist() == pytest.approx([0, 0, 0, 2 / 3])
    assert recall.tolist() == [0, 0, 0, 1]
    assert f2.tolist() == pytest.approx([0, 0, 0, 10 / 11])
    assert support.tolist() == [2, 0, 0, 2]


def test_macro_f1_counts_a_class_never_true_nor_predicted_as_zero():
    actual, predicted = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
    # Class 0: tp 1, fn 1 -> 2/3; class 1: tp 1, fp 1 -> 2/3; class 2: 1; class 3 (absent): 0.
    assert macro_f1(actual, predicted, 4) == pytest.approx((2 / 3 + 2 / 3 + 1 + 0) / 4)


def test_confusion_counts_rows_are_actual_columns_predicted():
    counts = confusion_counts(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 4)
    # The one class-0 image predicted 1 sits at row 0, column 1; class 3 is an empty row.
    assert counts.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_tuned_thresholds_beat_one_half_on_the_data_they_were_tuned_on(scores):
    half = score(*scores, np.full(13, 0.5))["f2"]
    thresholds = tune_thresholds(*scores)
    assert score(*scores, thresholds)["f2"] > half
    assert ((0 < thresholds) & (thresholds < 1)).all()


def test_weather_is_the_argmax(scores):
    weather_true, ground_true, weather_prob, ground_prob = scores
    tags = predict_tags(weather_prob, ground_prob, np.full(13, 0.5))
    assert (tags[:, :4].sum(1) == 1).all()
    assert (np.argmax(tags[:, :4], 1) == np.argmax(weather_prob, 1)).all()


def test_perfect_predictions_score_one(scores):
    weather_true, ground_true, *_ = scores
    result = score(weather_true, ground_true, weather_true, ground_true.astype(float), np.full(13, 0.5))
    assert result["f2"] == 1.0 and result["weather_accuracy"] == 1.0
    assert all(m["f2"] == 1.0 for m in result["ground"].values() if m["support"])


def test_prior_baseline_predicts_the_majority_weather(scores):
    weather_true, ground_true, *_ = scores
    weather_prob, ground_prob = prior_scores(len(weather_true), weather_true.mean(0), ground_true.mean(0))
    result = score(weather_true, ground_true, weather_prob, ground_prob, np.full(13, 0.5))
    assert result["weather_accuracy"] == pytest.approx(weather_true[:, 0].mean(), abs=1e-4)


# --- Threshold strategies (evaluate.thresholds) ------------------------------------------------

# Label j separates perfectly at CUTS[j]: positives score just above it, negatives just below.
CUTS = np.round(0.1 + 0.04 * np.arange(13), 2)  # on the tuning grid: 0.10, 0.14, ..., 0.58
POSITIVES = np.array([0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 120, 150])  # of 200 chips, by label


def separable(n: int = 200) -> tuple[np.ndarray, ...]:
    weather_true = np.tile(np.eye(4)[0], (n, 1))
    weather_prob = np.tile([0.7, 0.1, 0.1, 0.1], (n, 1))
    ground_true = (np.arange(n)[:, None] < POSITIVES[None, :]).astype(int)
    ground_prob = np.where(ground_true == 1, CUTS + 0.01, CUTS - 0.01)
    return weather_true, ground_true, weather_prob, ground_prob


def test_fixed_is_the_f2_optimal_point_for_every_label():
    assert F2_OPTIMAL_THRESHOLD == 0.2
    assert choose_thresholds("fixed", *separable()).tolist() == [0.2] * 13


def test_per_label_finds_each_labels_own_cut():
    thresholds = choose_thresholds("per_label", *separable())
    present = POSITIVES > 0
    np.testing.assert_allclose(thresholds[present], CUTS[present])
    assert thresholds[0] == 0.5  # no positive: every value ties, the one nearest 0.5 stays


def test_global_is_one_value_the_best_on_val():
    data = separable()
    best = tune_global_threshold(*data)
    assert choose_thresholds("global", *data).tolist() == [best] * 13
    assert score(*data, np.full(13, best))["f2"] == max(
        score(*data, np.full(13, t))["f2"] for t in THRESHOLD_GRID
    )
    # One cut for all: it sits among the cuts of the most frequent labels (0.50, 0.54, 0.58).
    assert best == 0.5
    # Positives at 0.31, negatives at 0.29 everywhere: only 0.30 separates them.
    weather_true, ground_true, weather_prob, _ = data
    assert (
        tune_global_threshold(weather_true, ground_true, weather_prob, np.where(ground_true, 0.31, 0.29))
        == 0.3
    )


def test_shrunk_moves_rare_labels_to_the_global_value_and_keeps_frequent_ones():
    data = separable()
    own, common = choose_thresholds("per_label", *data), tune_global_threshold(*data)
    shrunk = choose_thresholds("shrunk", *data)
    weight = POSITIVES / (POSITIVES + SHRINK_POSITIVES)
    np.testing.assert_allclose(shrunk, np.round(weight * own + (1 - weight) * common, 2))
    assert shrunk[0] == common  # no positive chip: the global value
    assert abs(shrunk[-1] - own[-1]) < abs(shrunk[-1] - common) / 4  # 150 positives: mostly its own


def test_cross_validated_averages_the_tuning_over_folds_of_val():
    data = separable()
    # Perfectly separable: every fold that holds a positive finds the label's cut; the
    # fold without label 1's only positive tunes it to 0.5 (no positive: all values tie).
    cross, own = choose_thresholds("cross_validated", *data), choose_thresholds("per_label", *data)
    np.testing.assert_allclose(cross[POSITIVES >= 5], own[POSITIVES >= 5])
    assert cross[1] == round((4 * own[1] + 0.5) / 5, 2)
    # Where folds disagree, it is their mean, rounded to the curve step; and reproducible.
    rng = np.random.default_rng(1)
    noisy = (*data[:3], np.clip(data[3] + rng.normal(0, 0.15, data[3].shape), 0, 1))
    folds = np.random.default_rng(FOLD_SEED).permutation(200) % CV_FOLDS
    tuned = [tune_thresholds(*(part[folds != k] for part in noisy)) for k in range(CV_FOLDS)]
    expected = np.round(np.mean(tuned, axis=0), 2)
    assert choose_thresholds("cross_validated", *noisy).tolist() == expected.tolist()
    assert not np.array_equal(expected, choose_thresholds("per_label", *noisy))
    # Fewer chips than folds: tuned on them all.
    few = tuple(part[:3] for part in noisy)
    assert choose_thresholds("cross_validated", *few).tolist() == tune_thresholds(*few).tolist()


def test_the_strategies_are_the_ones_params_accept():
    from typing import get_args

    from amazonia.common.params import EvaluateParams

    assert get_args(EvaluateParams.model_fields["thresholds"].annotation) == THRESHOLD_STRATEGIES
    with pytest.raises(ValueError, match="unknown threshold strategy 'best'"):
        choose_thresholds("best", *separable())
