"""The model stages under real ``dvc repro``: what reruns, resume after kill -9, determinism."""

import json

import numpy as np
import pytest

from tests.conftest import (
    BIN,
    first_epoch,
    folder_texts,
    kill_train_after,
    ran_stages,
    run,
    saved_arrays,
    set_params,
)

DVC = str(BIN / "dvc")
MODEL_STAGES = {"train", "evaluate", "export", "smoke_check"}

pytestmark = pytest.mark.slow


def repro(repo, *args):
    return ran_stages(run([DVC, "repro", *args], repo).stdout)


def test_tiny_run_passes_its_smoke_check_and_scores(tiny_pipeline):
    smoke = json.loads((tiny_pipeline / "metrics/smoke.json").read_text())
    assert smoke["passed"] is True
    assert {c["name"] for c in smoke["checks"]} >= {"saved_model_cli run", "saved model vs keras"}
    report = json.loads((tiny_pipeline / "metrics/eval.json").read_text())
    assert 0 <= report["f2"] <= 1 and "baseline" in report
    assert (tiny_pipeline / "models/PlanetModel/1/saved_model.pb").is_file()
    assert (tiny_pipeline / "models/PlanetModel/1/assets.extra/thresholds.json").is_file()
    shown = run(
        [str(BIN / "saved_model_cli"), "show", "--dir", "models/PlanetModel/1", "--all"], tiny_pipeline
    ).stdout
    assert "signature_def['serving_default']" in shown and "signature_def['serving_bytes']" in shown
    assert "inputs['input_image']" in shown and "inputs['image_bytes']" in shown
    assert "outputs['weather']" in shown and "outputs['ground']" in shown


def test_params_rerun_only_their_stages_and_training_is_deterministic(pipeline_copy):
    repo = pipeline_copy
    assert repro(repo) == set()
    before = (repo / "metrics/train/metrics.json").read_text()
    evaluation = (repo / "metrics/eval.json").read_text()

    # Same seed, same machine: the same numbers.
    run([DVC, "repro", "--force", "--single-item", "train"], repo)
    assert (repo / "metrics/train/metrics.json").read_text() == before
    assert repro(repo) <= {"evaluate", "export", "smoke_check"}
    assert (repo / "metrics/eval.json").read_text() == evaluation

    set_params(repo, {"export": {"version": 2}})
    assert repro(repo) == {"export", "smoke_check"}
    assert (repo / "models/PlanetModel/2/saved_model.pb").is_file()

    # The input size is the model's: it retrains, and serialize (the stored files) stays.
    set_params(repo, {"train": {"image_size": 24}})
    assert repro(repo) == MODEL_STAGES
    smoke = json.loads((repo / "metrics/smoke.json").read_text())
    assert smoke["passed"] is True
    served_input = smoke["signatures"]["serve"]["serving_default"]["inputs"]["input_image"]
    assert served_input["shape"] == [-1, 24, 24, 3]

    # Test-time augmentation and the threshold strategy change what is predicted, not what
    # is trained; the export averages the views as evaluate did, which the smoke check
    # holds against the Keras model, and ships the chosen strategy's thresholds.
    set_params(repo, {"evaluate": {"tta": "d4", "thresholds": "fixed"}})
    assert repro(repo) == {"evaluate", "export", "smoke_check"}
    assert json.loads((repo / "metrics/smoke.json").read_text())["passed"] is True
    shipped = json.loads((repo / "models/PlanetModel/2/assets.extra/thresholds.json").read_text())
    assert set(shipped["ground"].values()) == {0.2}


def test_training_resumes_after_kill(pipeline_copy):
    """Killed by -9 after epoch k, ``dvc repro`` resumes at k + 1 and ends with the weights,
    optimizer state and DVCLive curves of an uninterrupted run, bit for bit."""
    repo = pipeline_copy
    # Augmented: what each epoch draws (order, views, dropout) must not depend on the kill.
    set_params(repo, {"train": {"epochs": 20, "augment": "d4"}})
    state = repo / "models/checkpoints/state.json"
    done = kill_train_after(repo, min_epoch=2)
    assert 2 <= done < 20

    result = run([DVC, "repro"], repo)
    assert first_epoch(result.stdout) == done + 1, "training should resume after the last finished epoch"
    final = json.loads(state.read_text())
    assert final == {**final, "epoch": 20, "complete": True}
    assert json.loads((repo / "metrics/train/metrics.json").read_text())["step"] == 19
    assert json.loads((repo / "metrics/smoke.json").read_text())["passed"] is True
    live = repo / "metrics/train"
    resumed, resumed_live = saved_arrays(repo / "models/model.keras"), folder_texts(live)

    # The same 20 epochs in one go (the finished checkpoint is not resumed).
    result = run([DVC, "repro", "--force", "--single-item", "train"], repo)
    assert first_epoch(result.stdout) == 1
    uninterrupted = saved_arrays(repo / "models/model.keras")
    assert resumed.keys() == uninterrupted.keys()
    assert any(name.startswith("optimizer/") for name in resumed), "Adam's state must be saved"
    assert [name for name in resumed if not np.array_equal(resumed[name], uninterrupted[name])] == []
    assert resumed_live == folder_texts(live)
    assert len(resumed_live["plots/metrics/train/loss.tsv"].splitlines()) == 1 + 20
