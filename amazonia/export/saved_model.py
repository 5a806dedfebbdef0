"""Exporting the trained model as a TF Serving SavedModel, and the contract it keeps.

The export stage writes a candidate to ``models/candidates/<name>/<version>/``, in TF
Serving's layout but polled by no server, which the smoke check publishes to
``models/<name>/<version>/`` once it passed (:mod:`amazonia.export.publish`). It has
two signatures, both listed in :data:`SIGNATURES`, the one description of the serving
interface that the smoke check and the server import:

* ``serving_default``: float32 chips in [0, 1], as the model was trained on;
* ``serving_bytes``: encoded JPEG, PNG, GIF, BMP, WebP or JPEG XL files of any size, decoded and
  resized in the graph by the function the training input pipeline runs
  (:mod:`amazonia.model.preprocessing`), so a client needs neither TensorFlow nor this
  repository, and the model sees the pixels it was trained on.

With ``evaluate.tta: d4`` both average the model over the eight symmetries of each chip
(:mod:`amazonia.model.augment`).

The label vocabulary and the tuned ground thresholds travel in the SavedModel's
``assets.extra/`` folder (read them with :func:`load_assets`), so a client can turn
the outputs into tags with the export alone; beside them, TF Serving's warmup file of a
few real test chips through both signatures (:func:`warmup_from_split`), which TF Serving
and ``amazonia serve`` replay before a version answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf
from tensorflow.core.protobuf import fingerprint_pb2

from amazonia.common.errors import AmazoniaError
from amazonia.common.files import atomic_dir
from amazonia.common.tf_errors import tf_error_message
from amazonia.export.chips import model_inputs, read_chips
from amazonia.export.contract import (
    ASSETS_EXTRA,
    FINGERPRINT_PB,
    INPUT_BYTES,
    LABEL_MAP_ASSET,
    SIGNATURE_BYTES,
    SIGNATURE_FLOAT,
    THRESHOLDS_ASSET,
    ExportError,
    check_label_map,
    check_thresholds,
)
from amazonia.export.warmup import WARMUP_CHIPS, WarmupRequest, chip_requests, write_warmup_requests
from amazonia.model import augment, network
from amazonia.model.names import INPUT_NAME
from amazonia.model.preprocessing import PREPROCESS_DEVICE, model_input_size, preprocess_batch, to_model_input

__all__ = [
    "export_saved_model",
    "build_serving_module",
    "load_trained_model",
    "read_thresholds",
    "tf_error_message",
    "warmup_from_split",
]

log = logging.getLogger(__name__)


def export_saved_model(
    model: keras.Model,
    export_path: Path | str,
    label_map: dict,
    thresholds: dict,
    tta: str = augment.NONE,
    warmup: Sequence[WarmupRequest] = (),
) -> None:
    """Write ``model`` (inference mode) as a SavedModel at ``export_path``, atomically.

    The chip size is the model's own input size. With ``tta`` ``d4`` both signatures
    average the model over the eight views of each chip (``evaluate.tta``: the
    predictions the thresholds were tuned on). The signatures are traced from whatever
    the model outputs; whether they keep :data:`SIGNATURES` is the smoke check's job,
    which runs on the written files. ``warmup`` requests, if any, become TF Serving's
    warmup file in ``assets.extra/`` (:func:`warmup_from_split` makes them).
    """
    try:
        image_size = model_input_size(model)
    except AmazoniaError as err:
        raise ExportError(str(err)) from None
    check_label_map(label_map, "label_map")
    check_thresholds(thresholds, "thresholds")
    module, signatures = build_serving_module(model, tta)
    # Whole or not at all: a half-written folder must not pass for an export, neither to
    # DVC nor to the smoke check, which then publishes it.
    with atomic_dir(export_path) as tmp:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        write_reproducible_fingerprint(tmp)
        extra = tmp / ASSETS_EXTRA
        extra.mkdir()
        (extra / LABEL_MAP_ASSET).write_text(json.dumps(label_map, indent=2) + "\n")
        (extra / THRESHOLDS_ASSET).write_text(json.dumps(thresholds, indent=2) + "\n")
        if warmup:
            write_warmup_requests(tmp, warmup)
    log.info("exported %s (%dpx, tta %s) to %s", model.name, image_size, tta, export_path)


def build_serving_module(
    model: keras.Model, tta: str = augment.NONE
) -> tuple[tf.Module, dict[str, tf.types.experimental.ConcreteFunction]]:
    """A module holding the two endpoints of :data:`SIGNATURES` and exactly the variables
    they read, and the endpoints as ``tf.saved_model.save`` takes its ``signatures``.

    ``serving_bytes`` runs :func:`amazonia.model.preprocessing.preprocess` and
    ``to_model_input`` on each string, the functions the training input pipeline runs
    on each stored chip, pinned to the CPU as that pipeline is; both endpoints then call
    one function running :func:`amazonia.model.augment.predict` (the model, with
    ``tta``), so the model's graph is traced and stored once, not once per endpoint
    (a second copy of EfficientNetV2-B0's would cost 2.5 s of CPU and 0.9 MB of saved_model.pb).

    Plain ``tf.saved_model.save``, not ``keras.export.ExportArchive``: its ``track(model)``
    stores every weight twice (keras-team/keras#23553: twice the files, and twice the
    variable memory in every server that loads them), and without it the archive lists
    the variables in the order of their memory addresses, which gives other bytes in each
    process. Here they are in the order of their names, unique in a Keras model
    (layer/variable), so the same model gives the same files.
    """
    image_size = model_input_size(model)
    chips = tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[chips], autograph=False)
    def predict(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return augment.predict(model, images, tta)

    # The argument names and TensorSpec names become the signature's input names.
    @tf.function(input_signature=[chips], autograph=False)
    def serve_float(input_image: tf.Tensor) -> dict[str, tf.Tensor]:
        return predict(input_image)

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name=INPUT_BYTES)], autograph=False)
    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.device(PREPROCESS_DEVICE):
            images = to_model_input(preprocess_batch(image_bytes, image_size))
        return predict(images)

    signatures = {
        SIGNATURE_FLOAT: serve_float.get_concrete_function(),
        SIGNATURE_BYTES: serve_bytes.get_concrete_function(),
    }
    read = {v.ref(): v for function in signatures.values() for v in function.variables}
    weights = sorted(read.values(), key=lambda v: v.name)
    shared = sorted({a.name for a, b in zip(weights, weights[1:]) if a.name == b.name})
    if shared:
        raise ExportError(
            f"model {model.name!r}: more than one variable is named {', '.join(shared)}; "
            "the export stores them in the order of their names: give each its own"
        )
    # Signatures only: the tf.functions as attributes too (as ExportArchive has them)
    # would store their graphs again, 2.3 s more CPU for EfficientNetV2-B0.
    module = tf.Module()
    module.weights = weights  # each saved once, in this order
    return module, signatures


def write_reproducible_fingerprint(saved_model_dir: Path) -> None:
    """Give ``fingerprint.pb`` a UUID made from the SavedModel's own hashes.

    TensorFlow draws the UUID at random on each save, the one byte difference between two
    exports of the same model; the hashes beside it (of saved_model.pb, its graph,
    signatures and object graph, and of the checkpoint) are of the content, and so is a
    UUID made from them.
    """
    path = saved_model_dir / FINGERPRINT_PB
    fingerprint = fingerprint_pb2.FingerprintDef.FromString(path.read_bytes())
    fingerprint.ClearField("uuid")
    digest = hashlib.sha256(fingerprint.SerializeToString(deterministic=True)).digest()
    fingerprint.uuid = str(int.from_bytes(digest[:16], "big"))  # TensorFlow's form: 128 bits, in decimal
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def warmup_from_split(
    model: keras.Model, split_dir: Path | str, chips: int = WARMUP_CHIPS
) -> list[WarmupRequest]:
    """Warmup requests (:func:`amazonia.export.warmup.chip_requests`) of the first ``chips``
    chips of the split at ``split_dir``: their stored files, and their pixels at the
    model's input size as training made them. Same model and split, same requests.

    Raises:
        ExportError: the split holds no chip.
        AmazoniaError: its manifest does not match its shards.
    """
    found = read_chips(split_dir, limit=chips)
    if not len(found):
        raise ExportError(f"{split_dir} holds no chips; the warmup file needs at least one")
    return chip_requests(found.files, model_inputs(found.files, model_input_size(model)))


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
