"""train.precision and train.strategy: mixed precision and tf.distribute on the tiny pipeline."""

import json

import pytest

from amazonia.model.input_pipeline import batches_per_epoch
from tests.conftest import BIN, ran_stages, run, set_params

DVC = str(BIN / "dvc")


def test_multi_worker_is_refused_naming_the_upstream_issue():
    from amazonia.model.distribute import DistributeError, make_strategy

    with pytest.raises(DistributeError, match=r"keras-team/keras/issues/20585.*train.strategy: mirrored"):
        make_strategy("multi_worker")


def test_several_replicas_get_full_batches_split_evenly():
    from amazonia.model.distribute import DistributeError, check_batch_size, validation_batch_size

    assert batches_per_epoch(65, 32) == 3
    assert batches_per_epoch(65, 32, full_batches=True) == 2
    with pytest.raises(ValueError, match="3 examples do not fill one batch of 32"):
        batches_per_epoch(3, 32, full_batches=True)
    check_batch_size(32, 2)
    with pytest.raises(DistributeError, match="train.batch_size: 30 does not split evenly over 4 replicas"):
        check_batch_size(30, 4)
    assert validation_batch_size(32, 400, 2) == 32
    assert validation_batch_size(32, 7, 2) == 6  # a small split still fills one batch
    with pytest.raises(DistributeError, match="1 validation examples cannot feed 2 replicas"):
        validation_batch_size(32, 1, 2)


@pytest.mark.slow
def test_mirrored_trains_the_tiny_pipeline_on_two_logical_cpu_devices(pipeline_copy):
    repo = pipeline_copy
    set_params(repo, {"train": {"strategy": "mirrored"}})
    result = run([DVC, "repro"], repo, env_extra={"AMAZONIA_CPU_REPLICAS": "2", "AMAZONIA_LOG_LEVEL": "INFO"})
    assert {"train", "evaluate", "export", "smoke_check"} <= ran_stages(result.stdout)
    assert "mirrored over 2 logical CPU devices" in result.stdout + result.stderr
    assert json.loads((repo / "metrics/train/metrics.json").read_text())["step"] == 1
    assert json.loads((repo / "metrics/smoke.json").read_text())["passed"] is True


@pytest.mark.slow
def test_mixed_bfloat16_tiny_run_passes_its_smoke_check_with_float32_heads(pipeline_copy):
    repo = pipeline_copy
    set_params(repo, {"train": {"precision": "mixed_bfloat16"}})
    result = run([DVC, "repro"], repo)
    assert {"train", "evaluate", "export", "smoke_check"} <= ran_stages(result.stdout)
    assert json.loads((repo / "metrics/smoke.json").read_text())["passed"] is True
    report = json.loads((repo / "metrics/eval.json").read_text())
    assert 0 <= report["f2"] <= 1
    policies = run(
        [
            str(BIN / "python"),
            "-c",
            "import keras, json; m = keras.saving.load_model('models/model.keras'); "
            "print(json.dumps({l.name: l.dtype_policy.name for l in m.layers}))",
        ],
        repo,
    ).stdout
    by_layer = json.loads(policies.strip().splitlines()[-1])
    assert by_layer["weather"] == by_layer["ground"] == "float32"
    assert any(name.startswith("conv2d") and p == "mixed_bfloat16" for name, p in by_layer.items())
