"""The original article's two-headed CNN, in Keras 3."""

from __future__ import annotations

from pathlib import Path

import keras

from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from amazonia.model.names import INPUT_NAME, OUTPUT_GROUND, OUTPUT_WEATHER


def build_model(
    image_size: int,
    filters: int = 32,
    dense_units: int = 128,
    dropout: float = 0.2,
    conv_blocks: int = 2,
    dense_blocks: int = 2,
) -> keras.Model:
    """Conv2D(3x3, same, relu) + MaxPool, twice; Flatten; Dense + Dropout, twice;
    a softmax ``weather`` head and a sigmoid ``ground`` head. Inputs in [0, 1].

    Layers take Keras's global dtype policy (``train.precision``), the heads float32."""
    inputs = keras.Input(shape=(image_size, image_size, 3), name=INPUT_NAME)
    x = inputs
    for _ in range(conv_blocks):
        x = keras.layers.Conv2D(filters, (3, 3), padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    for _ in range(dense_blocks):
        x = keras.layers.Dense(dense_units, activation="relu")(x)
        x = keras.layers.Dropout(dropout)(x)
    # float32 heads under any mixed-precision policy: softmax, sigmoid and the losses
    # need its range, and the exported signatures promise float32 outputs.
    weather = keras.layers.Dense(
        len(LABELS_WEATHER), activation="softmax", name=OUTPUT_WEATHER, dtype="float32"
    )(x)
    ground = keras.layers.Dense(
        len(LABELS_GROUND), activation="sigmoid", name=OUTPUT_GROUND, dtype="float32"
    )(x)
    return keras.Model(inputs, {OUTPUT_WEATHER: weather, OUTPUT_GROUND: ground}, name="planet_cnn")


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
    """``model`` computing in float32 throughout, whatever ``train.precision`` it was trained at.

    Mixed precision speeds up training; evaluation, export and serving run in float32, so
    served answers equal the Keras model's to 1e-5 and run at full speed on CPUs without
    16-bit arithmetic. The weights are float32 under every Keras policy and are copied
    as they are. A float32 model is returned unchanged.
    """
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def float32_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    clone = keras.models.clone_model(model, clone_function=float32_layer)
    clone.set_weights(model.get_weights())
    return clone


def load_for_inference(path: Path | str) -> keras.Model:
    """A trained ``.keras`` model, in float32 (:func:`for_inference`), uncompiled."""
    return for_inference(keras.saving.load_model(path, compile=False))
