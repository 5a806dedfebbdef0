"""Real chips of a split as the two signatures take them: the stored files and the model's pixels.

``serving_bytes`` takes a chip's file as the shards store it (byte for byte the file in
``data/raw``); ``serving_default`` takes float pixels, which :func:`model_inputs` makes
with the one preprocessing function training and evaluation run
(:mod:`amazonia.model.preprocessing`). The export's warmup file, the smoke check and the
blessing gate all read their chips here, in the record order every reader uses
(:func:`amazonia.model.input_pipeline.records`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from amazonia.data.records.manifest import check_manifest
from amazonia.data.records.schema import (
    FEATURE_GROUND,
    FEATURE_IMAGE,
    FEATURE_NAME,
    FEATURE_WEATHER,
    feature_spec,
)
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from amazonia.model.input_pipeline import records
from amazonia.model.preprocessing import preprocess, to_model_input

_PARSE_BATCH = 256  # records parsed per call: the split is read once, whole or in part


@dataclass(frozen=True)
class StoredChips:
    """Chips of a split in record order: names, stored files and labels (vocabulary order)."""

    names: list[str]
    files: list[bytes]  # as serving_bytes takes them
    weather: np.ndarray  # int64 (n, len(LABELS_WEATHER)), one-hot
    ground: np.ndarray  # int64 (n, len(LABELS_GROUND)), multi-hot

    def __len__(self) -> int:
        return len(self.files)


def read_chips(split_dir: Path | str, limit: int | None = None) -> StoredChips:
    """The first ``limit`` chips of the split at ``split_dir`` (all when None), after
    checking its manifest (files, sizes, SHA-256).

    Raises:
        AmazoniaError: the manifest does not match the shards (the message names them).
    """
    split_dir = Path(split_dir)
    dataset = records(split_dir, check_manifest(split_dir))
    if limit is not None:
        dataset = dataset.take(limit)
    names: list[str] = []
    files: list[bytes] = []
    weather = [np.zeros((0, len(LABELS_WEATHER)), np.int64)]
    ground = [np.zeros((0, len(LABELS_GROUND)), np.int64)]
    for batch in dataset.batch(_PARSE_BATCH):
        parsed = tf.io.parse_example(batch, feature_spec())
        names += [name.decode("utf-8") for name in parsed[FEATURE_NAME].numpy()]
        files += list(parsed[FEATURE_IMAGE].numpy())
        weather.append(parsed[FEATURE_WEATHER].numpy())
        ground.append(parsed[FEATURE_GROUND].numpy())
    return StoredChips(names, files, np.concatenate(weather), np.concatenate(ground))


def model_inputs(files: Sequence[bytes], image_size: int) -> np.ndarray:
    """float32 (n, S, S, 3), ``S = image_size``: each file as training and evaluation feed
    it to the model (:func:`amazonia.model.preprocessing.preprocess`, then
    :func:`~amazonia.model.preprocessing.to_model_input`)."""
    images = [to_model_input(preprocess(tf.constant(data), image_size)).numpy() for data in files]
    return np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.float32)
