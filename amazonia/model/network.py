"""The two-headed model: the original article's CNN or a Keras Applications backbone, in Keras 3.

Every architecture (``train.architecture``) takes ``input_image``, float32 (None, S, S, 3) RGB
in [0, 1], and ends in the same two float32 heads: ``weather`` (softmax over 4) and ``ground``
(sigmoid over 13).
"""

from __future__ import annotations

from pathlib import Path

import keras

from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from amazonia.model import architectures
from amazonia.model.depthwise import depthwise_config, rebuilt
from amazonia.model.names import INPUT_NAME, OUTPUT_GROUND, OUTPUT_WEATHER

# Keras's dtypes of 16-bit compute that a mixed-precision model's config names (nested
# models' inputs take their compute dtype).
_HALF_DTYPES = {"bfloat16", "float16"}


def build_model(
    image_size: int,
    architecture: str = "article",
    *,
    filters: int = 32,
    dense_units: int = 128,
    dropout: float = 0.2,
    weights: Path | None = None,
) -> keras.Model:
    """The model of ``architecture`` for S x S chips, ``image_size`` = S.

    ``article``: Conv2D(3x3, same, relu) + MaxPool, twice; Flatten; Dense(``dense_units``) +
    Dropout, twice; ``filters`` per Conv2D. A backbone (:mod:`amazonia.model.architectures`):
    its feature map, global average pooling, Dropout; ``weights`` a Keras Applications notop
    weights file to start it from. Then the two heads. Layers take Keras's global dtype
    policy (``train.precision``), the heads float32.
    """
    inputs = keras.Input(shape=(image_size, image_size, 3), name=INPUT_NAME)
    if architecture == "article":
        if weights is not None:
            raise ValueError("the article's network has no pretrained weights")
        x = _article_trunk(inputs, filters, dense_units, dropout)
        name = "planet_cnn"
    else:
        x = architectures.backbone_features(architecture, inputs, weights)
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        name = f"planet_{architecture}"
    # float32 heads under any mixed-precision policy: softmax, sigmoid and the losses
    # need its range, and the exported signatures promise float32 outputs.
    weather = keras.layers.Dense(
        len(LABELS_WEATHER), activation="softmax", name=OUTPUT_WEATHER, dtype="float32"
    )(x)
    ground = keras.layers.Dense(
        len(LABELS_GROUND), activation="sigmoid", name=OUTPUT_GROUND, dtype="float32"
    )(x)
    return keras.Model(inputs, {OUTPUT_WEATHER: weather, OUTPUT_GROUND: ground}, name=name)


def _article_trunk(
    inputs: keras.KerasTensor,
    filters: int,
    dense_units: int,
    dropout: float,
    conv_blocks: int = 2,
    dense_blocks: int = 2,
) -> keras.KerasTensor:
    x = inputs
    for _ in range(conv_blocks):
        x = keras.layers.Conv2D(filters, (3, 3), padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    for _ in range(dense_blocks):
        x = keras.layers.Dense(dense_units, activation="relu")(x)
        x = keras.layers.Dropout(dropout)(x)
    return x


def compile_model(model: keras.Model, learning_rate: float) -> keras.Model:
    """Adam; losses by output name; weather accuracy and ground F2 as metrics."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={OUTPUT_WEATHER: "categorical_crossentropy", OUTPUT_GROUND: "binary_crossentropy"},
        metrics={
            OUTPUT_WEATHER: [keras.metrics.CategoricalAccuracy(name="accuracy")],
            OUTPUT_GROUND: [keras.metrics.FBetaScore(beta=2.0, threshold=0.5, average="micro", name="f2")],
        },
    )
    return model


def for_inference(model: keras.Model) -> keras.Model:
    """``model`` as evaluation, export and serving run it: float32 throughout, whatever
    ``train.precision`` it was trained at, and no layer that needs XLA.

    Mixed precision speeds up training; evaluation, export and serving run in float32, so
    served answers equal the Keras model's to 1e-5 and run at full speed on CPUs without
    16-bit arithmetic. A depthwise convolution written as Keras's grouped ``Conv2D`` needs
    XLA, which TF Serving leaves off on CPU: it becomes a ``DepthwiseConv2D``
    (:mod:`amazonia.model.depthwise`; the backbones train with those already, a model
    trained before or built elsewhere may not). The model is rebuilt from its config with
    every layer's policy (nested backbones' included) set to float32, and the weights,
    float32 under every Keras policy, are copied. A model with nothing to change is
    returned unchanged.
    """
    trained = model.get_config()
    config = _float32_config(depthwise_config(trained))
    if config == trained:
        return model
    policy = keras.mixed_precision.global_policy()
    # Layers the config gives no dtype (a backbone's keras.ops) take the global policy.
    keras.mixed_precision.set_global_policy("float32")
    try:
        return rebuilt(model, config)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _float32_config(node: object) -> object:
    """A model config with every dtype policy, and every 16-bit input dtype, made float32."""
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy":
            return {**node, "config": {**node["config"], "name": "float32"}}
        return {
            key: "float32" if key == "dtype" and _is_half(value) else _float32_config(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_float32_config(value) for value in node]
    return node


def _is_half(dtype: object) -> bool:
    return isinstance(dtype, str) and dtype in _HALF_DTYPES


def load_for_inference(path: Path | str) -> keras.Model:
    """A trained ``.keras`` model, in float32 (:func:`for_inference`), uncompiled."""
    return for_inference(architectures.load_model(path, compile=False))
