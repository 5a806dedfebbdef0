"""Exporting the trained model as a TF Serving SavedModel, and the contract it keeps.

The export lives at ``models/<name>/<version>/`` (TF Serving's layout) and has two
signatures, both listed in :data:`SIGNATURES`, the one description of the serving
interface that the smoke check and the server import:

* ``serving_default``: float32 chips in [0, 1], as the model was trained on;
* ``serving_bytes``: encoded JPEG or PNG files of any size, decoded and resized in
  the graph, so a client needs neither TensorFlow nor this repository.

The label vocabulary and the tuned ground thresholds travel in the SavedModel's
``assets.extra/`` folder (read them with :func:`load_assets`), so a client can turn
the outputs into tags with the export alone.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import keras
import tensorflow as tf

from amazonia.dataset import INPUT_NAME, to_model_input
from amazonia.errors import AmazoniaError
from amazonia.files import atomic_dir
from amazonia.labels import LABELS_GROUND, LABELS_WEATHER
from amazonia.model import OUTPUT_GROUND, OUTPUT_WEATHER

log = logging.getLogger(__name__)

SERVE_TAG = "serve"  # tf.saved_model.SERVING, the tag-set TF Serving loads
SIGNATURE_FLOAT = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
INPUT_BYTES = "image_bytes"
ASSETS_EXTRA = "assets.extra"
LABEL_MAP_ASSET = "label_map.json"
THRESHOLDS_ASSET = "thresholds.json"

BATCH = -1  # any batch size, as saved_model_cli shows it
IMAGE_SIZE = "S"  # stands for serialize.image_size in the shapes below


class ExportError(AmazoniaError):
    """The model or its companion files cannot be exported as they are."""


@dataclass(frozen=True)
class TensorContract:
    """One input or output of a signature: TensorFlow dtype name and shape."""

    dtype: str
    shape: tuple[int | str, ...]  # BATCH for any size, IMAGE_SIZE for the chip size

    def describe(self, image_size: int) -> dict[str, Any]:
        """``{"dtype", "shape"}`` with the image size filled in, as the smoke check reports it."""
        return {"dtype": self.dtype, "shape": [image_size if d == IMAGE_SIZE else d for d in self.shape]}


@dataclass(frozen=True)
class SignatureContract:
    inputs: Mapping[str, TensorContract]
    outputs: Mapping[str, TensorContract]

    def describe(self, image_size: int) -> dict[str, dict[str, dict[str, Any]]]:
        return {
            "inputs": {name: t.describe(image_size) for name, t in sorted(self.inputs.items())},
            "outputs": {name: t.describe(image_size) for name, t in sorted(self.outputs.items())},
        }


_OUTPUTS = MappingProxyType(
    {
        OUTPUT_WEATHER: TensorContract("float32", (BATCH, len(LABELS_WEATHER))),
        OUTPUT_GROUND: TensorContract("float32", (BATCH, len(LABELS_GROUND))),
    }
)

# The serving interface: signature name -> inputs and outputs (names, dtypes, shapes).
SIGNATURES: Mapping[str, SignatureContract] = MappingProxyType(
    {
        SIGNATURE_FLOAT: SignatureContract(
            inputs=MappingProxyType(
                {INPUT_NAME: TensorContract("float32", (BATCH, IMAGE_SIZE, IMAGE_SIZE, 3))}
            ),
            outputs=_OUTPUTS,
        ),
        SIGNATURE_BYTES: SignatureContract(
            inputs=MappingProxyType({INPUT_BYTES: TensorContract("string", (BATCH,))}),
            outputs=_OUTPUTS,
        ),
    }
)


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
    # A half-written version folder would be picked up by TF Serving, which watches
    # models/<name>/ for numeric folders; the temporary ".tmp-<version>.*" is ignored.
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
    """Encoded JPEG/PNG/GIF/BMP bytes of any size -> float32 (S, S, 3) in [0, 1].

    An S x S image gives exactly the training pixels (same decoder, same scaling as
    :func:`amazonia.dataset.to_model_input`); other sizes are resized first.
    """
    # channels=3 turns grayscale into RGB and drops alpha, as the serialize stage does.
    image = to_model_input(tf.io.decode_image(data, channels=3, expand_animations=False))
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


def load_trained_model(path: Path | str) -> keras.Model:
    """Load a ``.keras`` model for inference (no optimizer or compiled metrics needed)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: not found; run 'dvc repro train' first")
    return keras.saving.load_model(path, compile=False)


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


def check_thresholds(thresholds: Any, where: str) -> None:
    """One threshold in [0, 1] per ground label of this code's vocabulary."""
    ground = thresholds.get("ground") if isinstance(thresholds, dict) else None
    if not isinstance(ground, dict):
        raise ExportError(f'{where}: expected {{"ground": {{"<label>": <threshold>, ...}}}}')
    missing = [t for t in LABELS_GROUND if t not in ground]
    unknown = [t for t in ground if t not in LABELS_GROUND]
    if missing or unknown:
        raise ExportError(
            f"{where}: ground thresholds do not match the vocabulary (missing: {', '.join(missing) or '-'}; "
            f"unknown: {', '.join(unknown) or '-'}); rerun 'dvc repro evaluate'"
        )
    bad = {t: v for t, v in ground.items() if not _is_probability(v)}
    if bad:
        raise ExportError(f"{where}: thresholds must be numbers in [0, 1]; got {bad}")


def check_label_map(label_map: Any, where: str) -> None:
    """The vocabulary must be this code's: the outputs' columns follow it."""
    if (
        not isinstance(label_map, dict)
        or label_map.get("weather") != list(LABELS_WEATHER)
        or label_map.get("ground") != list(LABELS_GROUND)
    ):
        raise ExportError(
            f"{where}: label vocabulary differs from amazonia.labels; rerun 'dvc repro encode_labels'"
        )


def load_assets(saved_model_dir: Path | str) -> tuple[dict, dict]:
    """``(label_map, thresholds)`` shipped in an export's ``assets.extra/``.

    Column ``i`` of output ``weather`` is ``label_map["weather"][i]`` (argmax picks
    one); ground label ``label_map["ground"][i]`` is on when its sigmoid reaches
    ``thresholds["ground"][label]``.
    """
    extra = Path(saved_model_dir) / ASSETS_EXTRA
    loaded = []
    for name in (LABEL_MAP_ASSET, THRESHOLDS_ASSET):
        try:
            loaded.append(json.loads((extra / name).read_text()))
        except FileNotFoundError:
            raise ExportError(f"{extra / name}: missing; re-export the model ('dvc repro export')") from None
        except json.JSONDecodeError as err:
            raise ExportError(f"{extra / name}: not valid JSON ({err}); re-export the model") from None
    label_map, thresholds = loaded
    ground = label_map.get("ground") if isinstance(label_map, dict) else None
    if not isinstance(ground, list) or not isinstance(label_map.get("weather"), list):
        raise ExportError(f"{extra / LABEL_MAP_ASSET}: expected lists 'weather' and 'ground'")
    # Checked against the shipped vocabulary, not this code's: clients may be older or newer.
    shipped = thresholds.get("ground") if isinstance(thresholds, dict) else None
    if not isinstance(shipped, dict) or set(shipped) != set(ground):
        raise ExportError(
            f"{extra / THRESHOLDS_ASSET}: ground thresholds do not match {LABEL_MAP_ASSET}'s ground labels"
        )
    return label_map, thresholds


def _check_input_size(model: keras.Model, image_size: int) -> None:
    shapes = [tuple(t.shape) for t in model.inputs]
    if shapes != [(None, image_size, image_size, 3)]:
        raise ExportError(
            f"model {model.name!r} takes inputs of shape {shapes}, but serialize.image_size is "
            f"{image_size} (expected [(None, {image_size}, {image_size}, 3)]); retrain ('dvc repro train')"
        )


def _is_probability(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 1
    )
