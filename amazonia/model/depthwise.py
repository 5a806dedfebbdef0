"""Depthwise convolutions that Keras builds as grouped ``Conv2D`` (ConvNeXt's), as ``DepthwiseConv2D``.

TensorFlow has no grouped convolution kernel on CPU, so Keras's TensorFlow backend runs a
grouped ``Conv2D`` through a function TensorFlow must compile with XLA: slow to train on CPUs
(ConvNeXt-T, 128 px, mixed_bfloat16, 2 cores: 4.4 chips/s, against 20.4 as ``DepthwiseConv2D``;
keras-team/keras#20471), and a SavedModel TF Serving on CPU cannot run
(``--xla_cpu_compilation_enabled=false`` by default). One with one input channel per group
is the same operation as a ``DepthwiseConv2D`` with ``filters / groups`` outputs per channel,
which TensorFlow runs natively: the model is rebuilt from its config with that layer in place,
same name, same weights (the kernel reshaped).
"""

from __future__ import annotations

import keras
import numpy as np


def depthwise_config(node: object) -> object:
    """A model (or layer) config with every depthwise grouped ``Conv2D`` a ``DepthwiseConv2D``."""
    if isinstance(node, dict):
        if node.get("class_name") == "Conv2D" and _is_depthwise_grouped(node):
            node = _as_depthwise(node)
        return {key: depthwise_config(value) for key, value in node.items()}
    if isinstance(node, list):
        return [depthwise_config(value) for value in node]
    return node


def rebuilt(model: keras.Model, config: dict) -> keras.Model:
    """``model`` built again from ``config`` (its own, rewritten: same layers and weights in the
    same order), its weights copied, a grouped kernel reshaped for the ``DepthwiseConv2D`` in its place."""
    clone = model.__class__.from_config(config)
    pairs = list(zip(model.weights, clone.weights, strict=True))
    # By position, as set_weights copies them: a config that built its layers in another
    # order would swap same-shaped weights silently.
    moved = [(ours.path, theirs.path) for ours, theirs in pairs if _owner(ours) != _owner(theirs)]
    if moved:
        raise ValueError(f"{model.name}: rebuilt weights are in another order: {moved[:3]}")
    clone.set_weights([_depthwise_kernel(ours.numpy(), tuple(theirs.shape)) for ours, theirs in pairs])
    return clone


def with_depthwise_convolutions(model: keras.Model) -> keras.Model:
    """``model`` with its depthwise grouped convolutions as ``DepthwiseConv2D``; ``model``
    itself when it has none."""
    config = model.get_config()
    depthwise = depthwise_config(config)
    return model if depthwise == config else rebuilt(model, depthwise)


def _owner(weight: keras.Variable) -> str:
    """The name of the layer a weight belongs to, the next to last part of its path: what
    comes before depends on where a nested model was built, and some layers (ConvNeXt's
    LayerScale) name their variables by a global counter."""
    parts = weight.path.split("/")
    return parts[-2] if len(parts) > 1 else ""


def _depthwise_kernel(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` for a weight of ``shape`` in the clone: itself, or a grouped kernel (h, w, 1,
    groups * m) reshaped for the DepthwiseConv2D in its place (h, w, groups, m): output channel
    g * m + j in both. Any other mismatch is left for set_weights to refuse."""
    if len(shape) == 4 and value.shape != shape and value.shape == (*shape[:2], 1, shape[2] * shape[3]):
        return value.reshape(shape)
    return value


def _is_depthwise_grouped(layer: dict) -> bool:
    """Whether a Conv2D's config is grouped with one input channel per group (channels
    last): a depthwise convolution. Others are left as they are; the smoke check names any
    function left needing XLA."""
    conv = layer["config"]
    channels = layer.get("build_config", {}).get("input_shape", [None])[-1]
    return (
        conv.get("groups", 1) > 1
        and channels == conv["groups"]
        and conv["data_format"] == "channels_last"
        and not conv.get("lora_rank")  # DepthwiseConv2D has no LoRA
    )


def _as_depthwise(layer: dict) -> dict:
    """A depthwise grouped Conv2D's config as the DepthwiseConv2D computing the same:
    ``filters / groups`` outputs from each input channel."""
    conv = layer["config"]
    depthwise = {
        key: conv[key]
        for key in (
            "name", "trainable", "dtype", "kernel_size", "strides", "padding", "data_format",
            "dilation_rate", "activation", "use_bias", "bias_initializer", "bias_regularizer",
            "activity_regularizer", "bias_constraint",
        )
    }  # fmt: skip
    depthwise.update(
        depth_multiplier=conv["filters"] // conv["groups"],
        depthwise_initializer=conv["kernel_initializer"],
        depthwise_regularizer=conv["kernel_regularizer"],
        depthwise_constraint=conv["kernel_constraint"],
    )
    return {**layer, "class_name": "DepthwiseConv2D", "config": depthwise}
