"""models/model.keras is a function of the model alone: the same weights, optimizer state
and architecture give the same bytes, in any process, at any time, built or loaded.

That is what lets DVC stop after a train stage that reran to the same weights
(tests/test_reruns.py shows it under ``dvc repro``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_python, saved_arrays

pytestmark = pytest.mark.slow

# Builds the default network with fixed seeds, trains it one step (so the optimizer has
# state) and saves it both ways; with a third argument, loads that file with Keras's own
# loader in safe mode and saves it again, as a resumed run saves a model it loaded.
SAVE = """
import sys
import keras, numpy as np, tensorflow as tf
from amazonia.model.network import build_model, compile_model
from amazonia.model.training import save_model_atomic

keras.utils.set_random_seed(0)
tf.config.experimental.enable_op_determinism()
model = build_model(32)
compile_model(model, 0.001)
rng = np.random.default_rng(0)
chips = rng.random((8, 32, 32, 3)).astype("float32")
targets = {
    name: rng.integers(0, 2, (8, *out.shape[1:])).astype("float32")
    for name, out in zip(model.output_names, model.outputs)
}
model.fit(chips, targets, batch_size=4, epochs=1, verbose=0)
save_model_atomic(model, sys.argv[1])
model.save(sys.argv[2])
if len(sys.argv) > 3:
    save_model_atomic(keras.saving.load_model(sys.argv[3], safe_mode=True), sys.argv[4])
"""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_weights_give_the_same_model_keras_bytes_in_another_process(tmp_path):
    first, first_plain = tmp_path / "first.keras", tmp_path / "first-plain.keras"
    second, second_plain = tmp_path / "second.keras", tmp_path / "second-plain.keras"
    resaved = tmp_path / "resaved.keras"
    run_python(SAVE, first, first_plain, cwd=ROOT)
    run_python(SAVE, second, second_plain, first, resaved, cwd=ROOT)

    # Keras's own files differ (the save date, zip dates, memory addresses in config.json):
    # without the rewrite this test would fail.
    assert _sha256(first_plain) != _sha256(second_plain)
    assert _sha256(first) == _sha256(second) == _sha256(resaved)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "first-plain.keras",
        "first.keras",
        "resaved.keras",
        "second-plain.keras",
        "second.keras",
    ]  # no temporary file left beside them

    # The same model inside: every weight and optimizer array as Keras saved it.
    plain, rewritten = saved_arrays(first_plain), saved_arrays(first)
    assert plain.keys() == rewritten.keys() and len(plain) > 10
    assert all(np.array_equal(plain[name], rewritten[name]) for name in plain)
