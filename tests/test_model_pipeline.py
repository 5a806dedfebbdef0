"""The model stages under real ``dvc repro``: what the tiny run scores and ships, what a param
reruns (kill -9 and resume: tests/test_resume.py; retrains giving the same bytes:
tests/test_reruns.py)."""

import json

import numpy as np
import pytest

from amazonia.data.vocabulary import LABELS_GROUND
from tests.conftest import BIN, HEAD_RUN, HISTORY_IMAGE_SIZE, ran_stages, run, set_params

DVC = str(BIN / "dvc")
MODEL_STAGES = {"train", "evaluate", "export", "smoke_check"}

pytestmark = pytest.mark.slow


def repro(repo, *args):
    return ran_stages(run([DVC, "repro", *args], repo).stdout)


def f2_by_hand(repo):
    """The Kaggle F2 of the trained model on the test split, with the shipped thresholds:
    per chip, F2 of the predicted tags (argmax weather, ground at or over its threshold)
    against the true ones; then the mean over the chips."""
    import keras

    from amazonia.model.evaluation import predict_split

    model = keras.saving.load_model(repo / "models/model.keras")
    weather_true, ground_true, weather_prob, ground_prob = predict_split(model, repo / "data/tfrecords/test")
    shipped = json.loads((repo / "models/thresholds.json").read_text())["ground"]
    thresholds = np.array([shipped[label] for label in LABELS_GROUND])
    weather = np.eye(weather_prob.shape[1])[weather_prob.argmax(axis=1)]
    predicted = np.hstack([weather, ground_prob >= thresholds]).astype(bool)
    truth = np.hstack([weather_true, ground_true]).astype(bool)
    hits = (predicted & truth).sum(axis=1)
    precision = np.divide(hits, predicted.sum(axis=1), out=np.zeros(len(hits)), where=predicted.any(axis=1))
    recall = np.divide(hits, truth.sum(axis=1), out=np.zeros(len(hits)), where=truth.any(axis=1))
    both = 4 * precision + recall
    return float(np.mean(np.divide(5 * precision * recall, both, out=np.zeros(len(hits)), where=both > 0)))


def test_tiny_run_passes_its_smoke_check_and_scores(tiny_pipeline):
    smoke = json.loads((tiny_pipeline / "metrics/smoke.json").read_text())
    assert smoke["passed"] is True
    assert {c["name"] for c in smoke["checks"]} >= {"saved_model_cli run", "saved model vs keras"}
    report = json.loads((tiny_pipeline / "metrics/eval.json").read_text())
    assert report["f2"] == round(f2_by_hand(tiny_pipeline), 4)
    assert report["gain_over_baseline"]["f2"] == round(report["f2"] - report["baseline"]["f2"], 4)
    assert (tiny_pipeline / "models/PlanetModel/1/saved_model.pb").is_file()
    assert (tiny_pipeline / "models/PlanetModel/1/assets.extra/thresholds.json").is_file()
    shown = run(
        [str(BIN / "saved_model_cli"), "show", "--dir", "models/PlanetModel/1", "--all"], tiny_pipeline
    ).stdout
    assert "signature_def['serving_default']" in shown and "signature_def['serving_bytes']" in shown
    assert "inputs['input_image']" in shown and "inputs['image_bytes']" in shown
    assert "outputs['weather']" in shown and "outputs['ground']" in shown


def test_the_input_size_retrains_and_leaves_the_stored_chips(team_history):
    """train.image_size is the model's: it reruns train and what follows, not serialize (the
    shards hold the chips' own files). team_history's HEAD is that change, run."""
    assert ran_stages((team_history.parent / HEAD_RUN).read_text()) == MODEL_STAGES
    smoke = json.loads((team_history / "metrics/smoke.json").read_text())
    assert smoke["passed"] is True
    served_input = smoke["signatures"]["serve"]["serving_default"]["inputs"]["input_image"]
    assert served_input["shape"] == [-1, HISTORY_IMAGE_SIZE, HISTORY_IMAGE_SIZE, 3]


def test_params_after_train_rerun_only_their_stages(pipeline_copy):
    # That a retrain gives the same bytes (nothing after it reruns): tests/test_reruns.py;
    # that export.version alone reruns export and smoke_check: tests/test_publish.py.
    repo = pipeline_copy
    assert repro(repo) == set()

    # Test-time augmentation and the threshold strategy change what is predicted, not what
    # is trained; the export averages the views as evaluate did, which the smoke check
    # holds against the Keras model, and ships the chosen strategy's thresholds.
    set_params(repo, {"evaluate": {"tta": "d4", "thresholds": "fixed"}, "export": {"version": 2}})
    assert repro(repo) == {"evaluate", "export", "smoke_check"}
    assert (repo / "models/PlanetModel/2/saved_model.pb").is_file()
    assert json.loads((repo / "metrics/smoke.json").read_text())["passed"] is True
    shipped = json.loads((repo / "models/PlanetModel/2/assets.extra/thresholds.json").read_text())
    assert set(shipped["ground"].values()) == {0.2}
