"""train.precision and train.strategy: mixed precision and tf.distribute on the tiny pipeline."""

import json

import pytest
import yaml

from amazonia.common.errors import AmazoniaError
from amazonia.common.params import ARCHITECTURES
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
    with pytest.raises(AmazoniaError, match="do not fill one batch of 32, .* lower train.batch_size"):
        batches_per_epoch(3, 32, full_batches=True)
    check_batch_size(32, 2)
    with pytest.raises(DistributeError, match="train.batch_size: 30 does not split evenly over 4 replicas"):
        check_batch_size(30, 4)
    assert validation_batch_size(32, 400, 2) == 32
    assert validation_batch_size(32, 7, 2) == 6  # a small split still fills one batch
    with pytest.raises(DistributeError, match="1 validation examples cannot feed 2 replicas"):
        validation_batch_size(32, 1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_inference_runs_in_float32_with_the_trained_weights(architecture):
    """Every layer, those of a nested backbone (and ConvNeXt's nested stem) included, computes
    in float32: the answers equal a model built in float32 with the same weights. None is a
    grouped convolution (ConvNeXt's depthwise ones are DepthwiseConv2D), so none needs XLA."""
    import keras
    import numpy as np

    from amazonia.model.architectures import all_layers
    from amazonia.model.distribute import set_precision
    from amazonia.model.network import build_model, for_inference

    size = 32
    try:
        set_precision("mixed_bfloat16")
        mixed = build_model(size, architecture, filters=4, dense_units=8)
    finally:
        set_precision("float32")
    inference = for_inference(mixed)
    assert {layer.dtype_policy.name for layer in all_layers(inference)} == {"float32"}
    assert not [x.name for x in all_layers(inference) if isinstance(x, keras.layers.Conv2D) and x.groups > 1]
    assert len(inference.weights) == len(mixed.weights)
    for ours, theirs in zip(inference.get_weights(), mixed.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    built_float32 = build_model(size, architecture, filters=4, dense_units=8)
    built_float32.set_weights(mixed.get_weights())
    assert for_inference(built_float32) is built_float32  # already what inference runs
    images = np.random.default_rng(0).random((4, size, size, 3), dtype=np.float32)
    exact, expected = inference(images, training=False), built_float32(images, training=False)
    rounded = mixed(images, training=False)
    for head in ("weather", "ground"):
        np.testing.assert_array_equal(exact[head], expected[head])
        np.testing.assert_allclose(exact[head], rounded[head], atol=0.1)  # bfloat16 rounding only
    assert for_inference(inference) is inference
    assert keras.mixed_precision.global_policy().name == "float32"


def layer_policies(repo):
    """Each layer's dtype policy in the run's ``models/model.keras``, as plain Keras loads it."""
    import keras

    model = keras.saving.load_model(repo / "models/model.keras")
    return {layer.name: layer.dtype_policy.name for layer in model.layers}


@pytest.mark.slow
def test_the_tiny_run_trains_in_mixed_bfloat16_with_float32_heads(tiny_pipeline):
    """The default precision, mixed_bfloat16, with float32 heads; evaluated, exported and
    smoke-checked in float32."""
    assert (
        yaml.safe_load((tiny_pipeline / "params.yaml").read_text())["train"]["precision"] == "mixed_bfloat16"
    )
    policies = layer_policies(tiny_pipeline)
    assert policies["weather"] == policies["ground"] == "float32"
    assert any(name.startswith("conv2d") and p == "mixed_bfloat16" for name, p in policies.items())
    assert json.loads((tiny_pipeline / "metrics/smoke.json").read_text())["passed"] is True


@pytest.mark.slow
def test_mirrored_float32_trains_the_tiny_pipeline_on_two_logical_cpu_devices(pipeline_copy):
    """train.strategy: mirrored over two logical CPU devices, and train.precision: float32
    (every layer float32), in one retrain. (A float32 model's export and smoke check:
    tests/test_export.py.)"""
    repo = pipeline_copy
    set_params(repo, {"train": {"strategy": "mirrored", "precision": "float32"}})
    env = {"AMAZONIA_CPU_REPLICAS": "2", "AMAZONIA_LOG_LEVEL": "INFO"}
    result = run([DVC, "repro", "train"], repo, env_extra=env)
    assert ran_stages(result.stdout) == {"train"}
    assert "mirrored over 2 logical CPU devices" in result.stdout + result.stderr
    assert json.loads((repo / "metrics/train/metrics.json").read_text())["step"] == 1
    assert set(layer_policies(repo).values()) == {"float32"}
