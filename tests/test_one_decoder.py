"""Training and serving compute the same pixels from the same file, bit for bit.

Every kind of file in ``tests/image_corpus.py``, at the model's size, larger and smaller,
is stored as it is in a split's records. The training side is the ``tf.data`` input
pipeline over those records (``load_split``: parse, preprocess, batch, ``to_model_input``).
The serving side is the ``serving_bytes`` signature of a real exported SavedModel,
loaded from disk, whose model is the identity: its outputs are the tensor the graph
feeds the model. Any difference between the two paths (decoder, channels, resize,
rounding, scaling, device) shows as a changed bit.

Then: a chip TensorFlow cannot decode stops training and evaluation with one line that
names it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from amazonia.common.paths import MODEL_KERAS, RECORDS_DIR
from amazonia.common.stage import run_stage
from amazonia.data.labels import label_map
from amazonia.data.vocabulary import LABELS_GROUND
from amazonia.export.contract import SIGNATURE_BYTES
from amazonia.export.saved_model import export_saved_model
from amazonia.model import training
from amazonia.model.input_pipeline import (
    UndecodableChipError,
    load_epochs,
    load_split,
    naming_undecodable_chips,
)
from amazonia.model.names import INPUT_NAME
from amazonia.model.network import build_model, compile_model
from stages import evaluate as evaluate_stage
from tests.image_corpus import VALID, chip, encode, write_split_of_files

pytestmark = pytest.mark.slow

SIZE = 48  # the model's input size here
# Kaggle's 256 px chips, and sizes the resize does not divide (synthetic chips are >= 32 px).
SOURCE_SIZES = {"same size": SIZE, "256 px": 256, "larger": 2 * SIZE + 7, "smaller": SIZE - 11}
THRESHOLDS = {"ground": {label: 0.5 for label in LABELS_GROUND}}


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {f"{case} @ {kind}": VALID[case](px) for case in VALID for kind, px in SOURCE_SIZES.items()}


@pytest.fixture(scope="module")
def trained_pixels(
    files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, np.ndarray]:
    """What the input pipeline feeds the model from each file, by its image name."""
    split = write_split_of_files(tmp_path_factory.mktemp("records") / "test", files)
    data, manifest = load_split(split, SIZE, batch_size=16, cache=False, with_names=True)
    assert manifest.examples == len(files)
    return {
        name.decode(): image
        for images, _, names in data.as_numpy_iterator()
        for image, name in zip(images, names)
    }


@pytest.fixture(scope="module")
def served_pixels(files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """What the exported serving_bytes graph feeds the model from each file, by its image name."""
    inputs = keras.Input((SIZE, SIZE, 3), name=INPUT_NAME)
    identity = keras.Model(inputs, {"pixels": keras.layers.Identity(name="pixels")(inputs)})
    folder = tmp_path_factory.mktemp("export") / "1"
    export_saved_model(identity, folder, label_map(), THRESHOLDS)
    serve = tf.saved_model.load(str(folder)).signatures[SIGNATURE_BYTES]
    pixels = serve(image_bytes=tf.constant(list(files.values())))["pixels"].numpy()
    return dict(zip(files, pixels))


def test_training_and_serving_feed_the_model_the_same_bits_for_every_kind_of_file(
    files: dict[str, bytes], trained_pixels: dict[str, np.ndarray], served_pixels: dict[str, np.ndarray]
) -> None:
    assert trained_pixels.keys() == served_pixels.keys() == files.keys()
    differ = [
        name
        for name in files
        if trained_pixels[name].dtype != np.float32
        or trained_pixels[name].shape != (SIZE, SIZE, 3)
        or trained_pixels[name].tobytes() != served_pixels[name].tobytes()
    ]
    assert differ == []
    # The chips are pictures, not blanks: the comparison could tell a wrong decode.
    spread = {name: float(image.std()) for name, image in trained_pixels.items()}
    assert min(spread.values()) > 0.02, min(spread, key=spread.get)


# --- A chip TensorFlow cannot decode ----------------------------------------------------------

GOOD = {f"train_{i}": encode(chip(SIZE, seed=i), "PNG") for i in range(5)}
BROKEN = b"\x89PNG\r\n\x1a\n" + b"\0" * 40  # a PNG signature and nothing TensorFlow can read


def with_broken_chip(at: int) -> dict[str, bytes]:
    files = dict(GOOD)
    items = list(files.items())
    items.insert(at, ("train_broken", BROKEN))
    return dict(items)


def test_a_chip_tensorflow_cannot_decode_stops_training_naming_it(tmp_path: Path) -> None:
    split = write_split_of_files(tmp_path / "train", with_broken_chip(3), split="train", shards=2)
    data, _ = load_epochs(
        split, SIZE, batch_size=2, epoch_seeds=training.shuffle_seeds(1, range(2)), file_seed=1, augment="d4"
    )
    model = compile_model(build_model(SIZE, filters=2, dense_units=4), 1e-3)
    with pytest.raises(UndecodableChipError) as raised, naming_undecodable_chips([split], SIZE):
        model.fit(data, steps_per_epoch=3, epochs=2, shuffle=False, verbose=0)
    # Dealt round-robin over 2 shards, the 4th file is the 2nd record of the 2nd shard.
    assert str(raised.value).startswith(
        f"{split}/planet-train.tfrecord-00001-of-00002: record 1, chip 'train_broken', cannot be decoded "
        "by TensorFlow ("
    )
    assert str(raised.value).endswith("); replace or remove that chip in data/raw, then rerun 'dvc repro'")


def test_evaluate_stops_with_one_line_naming_the_chip_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "repo"
    for split, files in (("train", GOOD), ("val", with_broken_chip(0)), ("test", GOOD)):
        write_split_of_files(root / RECORDS_DIR / split, files, split=split, shards=1)
    (root / "params.yaml").write_text(yaml.safe_dump({}))
    (root / MODEL_KERAS).parent.mkdir(parents=True)
    build_model(SIZE, filters=2, dense_units=4).save(root / MODEL_KERAS)

    with contextlib.chdir(root), pytest.raises(SystemExit) as exited:
        run_stage(evaluate_stage.main)

    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith(
        "error: data/tfrecords/val/planet-val.tfrecord-00000-of-00001: record 0, chip 'train_broken', "
        "cannot be decoded by TensorFlow ("
    )
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert not (root / "models/thresholds.json").exists()


def test_without_a_broken_chip_other_errors_pass_unchanged(tmp_path: Path) -> None:
    split = write_split_of_files(tmp_path / "train", GOOD, split="train")
    with pytest.raises(tf.errors.InvalidArgumentError, match="not about a chip"):
        with naming_undecodable_chips([split], SIZE):
            raise tf.errors.InvalidArgumentError(None, None, "not about a chip")
