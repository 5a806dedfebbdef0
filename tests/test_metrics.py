import numpy as np
import pytest

from amazonia.model.metrics import kaggle_f2, predict_tags, prior_scores, score, tune_thresholds


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
