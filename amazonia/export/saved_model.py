"""Exporting the trained model as a TF Serving SavedModel, and the contract it keeps.

The export stage writes a candidate to ``models/candidates/<name>/<version>/``, in TF
Serving's layout but polled by no server, which the smoke check publishes to
``models/<name>/<version>/`` once it passed (:mod:`amazonia.export.publish`). It has
two signatures, both listed in :data:`SIGNATURES`, the one description of the serving
interface that the smoke check and the server import:

* ``serving_default``: float32 chips in [0, 1], as the model was trained on;
* ``serving_bytes``: encoded JPEG, PNG, GIF, BMP, WebP or JPEG XL files of any size,
  decoded and resized in the graph, so a client needs neither TensorFlow nor this repository.

The label vocabulary and the tuned ground thresholds travel in the SavedModel's
``assets.extra/`` folder (read them with :func:`load_assets`), so a client can turn
the outputs into tags with the export alone.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import keras
import tensorflow as tf

from amazonia.common.files import atomic_dir
from amazonia.export.contract import (
    ASSETS_EXTRA,
    INPUT_BYTES,
    LABEL_MAP_ASSET,
    SIGNATURE_BYTES,
    SIGNATURE_FLOAT,
    THRESHOLDS_ASSET,
    ExportError,
    check_label_map,
    check_thresholds,
)
from amazonia.model import network
from amazonia.model.input_pipeline import to_model_input
from amazonia.model.names import INPUT_NAME

log = logging.getLogger(__name__)

_TF_ERROR_NOISE = ("Graph execution error", "Detected at node", "<stack traces", " ", "\t", "[[")
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]\s*$")


def export_saved_model(
    model: keras.Model,
    export_path: Path | str,
    image_size: int,
    label_map: dict,
    thresholds: dict,
) -> None:
    """Write ``model`` (inference mode) as a SavedModel at ``export_path``, atomically.

    The signatures are traced from whatever the model outputs; whether they keep
    :data:`SIGNATURES` is the smoke check's job, which runs on the written files.
    """
    _check_input_size(model, image_size)
    check_label_map(label_map, "label_map")
    check_thresholds(thresholds, "thresholds")
    archive = build_archive(model, image_size)
    # Whole or not at all: a half-written folder must not pass for an export, neither to
    # DVC nor to the smoke check, which then publishes it.
    with atomic_dir(export_path) as tmp:
        archive.write_out(str(tmp), verbose=False)
        extra = tmp / ASSETS_EXTRA
        extra.mkdir()
        (extra / LABEL_MAP_ASSET).write_text(json.dumps(label_map, indent=2) + "\n")
        (extra / THRESHOLDS_ASSET).write_text(json.dumps(thresholds, indent=2) + "\n")
    log.info("exported %s (%dpx) to %s", model.name, image_size, export_path)


def build_archive(model: keras.Model, image_size: int) -> keras.export.ExportArchive:
    """An ExportArchive with the two endpoints of :data:`SIGNATURES`, ready to write out."""
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve_float(input_image: tf.Tensor) -> dict[str, tf.Tensor]:
        return model(input_image, training=False)

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = tf.map_fn(
            lambda data: decode_any_image(data, image_size),
            image_bytes,
            fn_output_signature=tf.TensorSpec((image_size, image_size, 3), tf.float32),
        )
        return model(images, training=False)

    # The argument names and TensorSpec names become the signature's input names.
    archive.add_endpoint(
        SIGNATURE_FLOAT,
        serve_float,
        input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name=INPUT_NAME)],
    )
    archive.add_endpoint(
        SIGNATURE_BYTES,
        serve_bytes,
        input_signature=[tf.TensorSpec((None,), tf.string, name=INPUT_BYTES)],
    )
    return archive


def decode_any_image(data: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP/JPEG XL bytes of any size -> float32 (S, S, 3) in [0, 1].

    An S x S image gives exactly the training pixels (same decoder, same scaling as
    :func:`amazonia.model.input_pipeline.to_model_input`); other sizes are resized first.
    The serialize stage (:mod:`amazonia.data.records.images`) decodes chips to these pixels.
    """
    image = to_model_input(decode_rgb(data))
    shape = tf.shape(image)
    same_size = tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size))
    image = tf.cond(
        same_size,
        lambda: image,
        # Antialiasing averages over the whole footprint when shrinking 256 -> S;
        # bilinear's weights are non-negative, the clip only removes rounding overshoot.
        lambda: tf.clip_by_value(
            tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True), 0.0, 1.0
        ),
    )
    return tf.ensure_shape(image, (image_size, image_size, 3))


def decode_rgb(data: tf.Tensor) -> tf.Tensor:
    """Encoded image bytes -> uint8 (H, W, 3): gray repeated, alpha dropped (not
    composited), an animation's first frame.

    Decoded with the file's own channels, then cut to RGB: ``channels=3`` gives the same
    pixels for JPEG, PNG, GIF and BMP, but refuses a WebP with alpha or animation and a
    JPEG XL that is not plain RGB ("Number of channels requested does not match input").
    """
    image = tf.io.decode_image(data, channels=0, expand_animations=False)
    rgb = tf.cond(
        tf.shape(image)[-1] < 3,
        lambda: tf.tile(image[..., :1], [1, 1, 3]),  # gray, or gray + alpha
        lambda: image[..., :3],
    )
    return tf.ensure_shape(rgb, (None, None, 3))


def load_trained_model(path: Path | str) -> keras.Model:
    """Load a ``.keras`` model for inference (no optimizer or compiled metrics needed), in
    float32 whatever ``train.precision`` it was trained at (``network.for_inference``)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: not found; run 'dvc repro train' first")
    return network.load_for_inference(path)


def read_thresholds(path: Path | str) -> dict:
    """Read and check ``thresholds.json`` (``{"ground": {label: threshold}}``)."""
    path = Path(path)
    try:
        thresholds = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path}: not found; run 'dvc repro evaluate' first") from None
    except json.JSONDecodeError as err:
        raise ExportError(f"{path}: not valid JSON ({err}); rerun 'dvc repro evaluate'") from None
    check_thresholds(thresholds, str(path))
    return thresholds


def _check_input_size(model: keras.Model, image_size: int) -> None:
    shapes = [tuple(t.shape) for t in model.inputs]
    if shapes != [(None, image_size, image_size, 3)]:
        raise ExportError(
            f"model {model.name!r} takes inputs of shape {shapes}, but serialize.image_size is "
            f"{image_size} (expected [(None, {image_size}, {image_size}, 3)]); retrain ('dvc repro train')"
        )


def tf_error_message(err: Exception) -> str:
    """The useful line of a TensorFlow error: op errors open with graph and stack-trace
    boilerplate, and the cause is the first other line."""
    text = getattr(err, "message", None) or str(err)
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(_TF_ERROR_NOISE)]
    return _OP_SUFFIX.sub("", lines[0] if lines else text.strip() or type(err).__name__)
