"""The model stages under real ``dvc repro``: what reruns, resume after kill -9, determinism."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import BIN, ran_stages, run, set_params, tool_env

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

    set_params(repo, {"train": {"epochs": 3}})
    assert repro(repo) == MODEL_STAGES
    assert json.loads((repo / "metrics/train/metrics.json").read_text())["step"] == 2


def test_training_resumes_after_kill(pipeline_copy):
    repo = pipeline_copy
    set_params(repo, {"train": {"epochs": 40}})
    state = repo / "models/checkpoints/state.json"
    proc = subprocess.Popen(
        [DVC, "repro", "train"],
        cwd=repo,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, "training finished before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        if (
            state.is_file()
            and json.loads(state.read_text()).get("epoch", 0) >= 2
            and not json.loads(state.read_text())["complete"]
        ):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = json.loads(state.read_text())["epoch"]
    assert 2 <= done < 40

    result = run([DVC, "repro"], repo)
    first_epoch = int(re.search(r"^Epoch (\d+)/40", result.stdout, re.M).group(1))
    assert first_epoch == done + 1, "training should resume after the last finished epoch"
    final = json.loads(state.read_text())
    assert final == {**final, "epoch": 40, "complete": True}
    assert json.loads((repo / "metrics/train/metrics.json").read_text())["step"] == 39
    assert json.loads((repo / "metrics/smoke.json").read_text())["passed"] is True
