"""ConvNeXt's depthwise convolutions as Keras builds them (grouped ``Conv2D``, run through a
function XLA must compile) against ``DepthwiseConv2D`` (``amazonia.model.depthwise``), which the
backbone is built with, trained and served.

``python -m bench grouped_conv`` (minutes: not in the default set) builds ConvNeXtTiny at 128 px
(``train.image_size``'s default) as Keras builds it, and the same model with its depthwise
convolutions swapped. Training: one process per way, ``mixed_bfloat16`` (``train.precision``'s
default), every layer training, chips/s of the median of TRAIN_STEPS batches after one untimed.
Serving: both exported, and in a fresh process per export the SavedModel loaded and
``serving_default`` called: the first call and the median of five more, per batch size. TF
Serving on CPU runs with ``--xla_cpu_compilation_enabled=false``: there the grouped export does
not answer at all; TensorFlow's Python runtime compiles it.
"""

from __future__ import annotations

import json
import logging
import shutil

from amazonia.common.params import TrainParams
from bench.common import (
    WORK_DIR,
    Settings,
    cpu_busy_percent,
    machine_description,
    markdown_table,
    python_last_line,
    save_results,
)

log = logging.getLogger(__name__)

ARCHITECTURE = "convnext_tiny"
IMAGE_SIZE = TrainParams().image_size
BATCHES = (1, 8, 32)
TRAIN_BATCH, TRAIN_STEPS = 16, 5
WAYS = {"grouped": "grouped Conv2D (Keras)", "depthwise": "DepthwiseConv2D (amazonia)"}
SCRATCH = WORK_DIR / "grouped_conv"

# The two models, the same weights: ConvNeXtTiny as Keras builds it, and with the swap.
MODELS = """
import sys
import keras
from amazonia.model.depthwise import with_depthwise_convolutions
from amazonia.model.names import INPUT_NAME

def convnext(size, way):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), name=INPUT_NAME)
    backbone = keras.applications.ConvNeXtTiny(include_top=False, weights=None, input_shape=(size, size, 3))
    features = keras.layers.GlobalAveragePooling2D()(backbone(keras.layers.Rescaling(255.0)(inputs)))
    heads = {
        "weather": keras.layers.Dense(4, activation="softmax", name="weather", dtype="float32")(features),
        "ground": keras.layers.Dense(13, activation="sigmoid", name="ground", dtype="float32")(features),
    }
    model = keras.Model(inputs, heads)
    return model if way == "grouped" else with_depthwise_convolutions(model)
"""

EXPORT = (
    MODELS
    + """
from pathlib import Path
from amazonia.data.labels import label_map
from amazonia.export.saved_model import export_saved_model

size, work = int(sys.argv[1]), Path(sys.argv[2])
thresholds = {"ground": {label: 0.5 for label in label_map()["ground"]}}
for way in ("grouped", "depthwise"):
    export_saved_model(convnext(size, way), work / way, label_map(), thresholds)
"""
)

TRAIN = (
    MODELS
    + """
import json, time
import numpy as np
from amazonia.model.distribute import set_precision
from amazonia.model.network import compile_model

way, size, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
set_precision("mixed_bfloat16")
model = compile_model(convnext(size, way), learning_rate=0.001)
rng = np.random.default_rng(0)
chips = rng.random((batch, size, size, 3), dtype=np.float32)
labels = {"weather": np.eye(4, dtype=np.float32)[rng.integers(0, 4, batch)],
          "ground": (rng.random((batch, 13)) < 0.3).astype(np.float32)}
start = time.perf_counter()
model.train_on_batch(chips, labels)
first = time.perf_counter() - start
timed = []
for _ in range(steps):
    start = time.perf_counter()
    model.train_on_batch(chips, labels)
    timed.append(time.perf_counter() - start)
print(json.dumps({"first_step_s": first, "images_per_s": batch / sorted(timed)[len(timed) // 2]}))
"""
)

SERVE = """
import json, sys, time
import numpy as np
import tensorflow as tf
from amazonia.export.smoke import xla_functions

folder, size, batches = sys.argv[1], int(sys.argv[2]), [int(b) for b in sys.argv[3:]]
signature = tf.saved_model.load(folder).signatures["serving_default"]
timings = {}
for batch in batches:
    chips = tf.constant(np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32))
    start = time.perf_counter()
    signature(input_image=chips)
    first = time.perf_counter() - start
    steady = []
    for _ in range(5):
        start = time.perf_counter()
        signature(input_image=chips)
        steady.append(time.perf_counter() - start)
    timings[batch] = {"first_ms": first * 1000, "median_ms": sorted(steady)[2] * 1000}
print(json.dumps({"xla_functions": len(xla_functions(folder)), "timings": timings}))
"""


def run(settings: Settings) -> str:
    shutil.rmtree(SCRATCH, ignore_errors=True)
    results: dict = {
        "cpu_busy_percent_before": cpu_busy_percent(),
        "architecture": ARCHITECTURE,
        "image_size": IMAGE_SIZE,
        "runs": [],
    }
    for way, name in WAYS.items():
        log.info("training %s", name)
        trained = json.loads(python_last_line(TRAIN, way, IMAGE_SIZE, TRAIN_BATCH, TRAIN_STEPS))
        results["runs"].append({"way": name, "train": trained})
    log.info("exporting %s both ways", ARCHITECTURE)
    python_last_line(EXPORT, IMAGE_SIZE, SCRATCH)
    for entry, way in zip(results["runs"], WAYS, strict=True):
        log.info("serving %s", WAYS[way])
        entry.update(json.loads(python_last_line(SERVE, SCRATCH / way, IMAGE_SIZE, *BATCHES)))
    save_results("grouped_conv", settings, results)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    return format_report(results)


def format_report(results: dict) -> str:
    rows = [
        (
            r["way"],
            f"{r['train']['images_per_s']:.1f} ({r['train']['first_step_s']:.1f} s)",
            r["xla_functions"],
            *(
                f"{r['timings'][str(b)]['median_ms']:.0f} ({r['timings'][str(b)]['first_ms']:.0f})"
                for b in BATCHES
            ),
        )
        for r in results["runs"]
    ]
    headers = [
        "depthwise convolutions as",
        f"training, mixed_bfloat16, batch {TRAIN_BATCH}: chips/s (first step)",
        "functions XLA must compile",
    ]
    headers += [f"serving_default, batch {b}: ms (first call)" for b in BATCHES]
    return "\n".join(
        [
            f"## {results['architecture']} at {results['image_size']} px, trained and served",
            "",
            markdown_table(headers, rows),
            "",
            f"Machine: {machine_description()}; CPU {results['cpu_busy_percent_before']:.0f}% busy before.",
        ]
    )
