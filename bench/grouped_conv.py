"""ConvNeXt's depthwise convolutions as Keras builds them (grouped ``Conv2D``, run through a
function XLA must compile) against the inference model's ``DepthwiseConv2D``
(``amazonia.model.network.for_inference``), as a server runs the export.

``python -m bench grouped_conv`` (a minute: not in the default set) builds ``convnext_tiny`` at
128 px (``train.image_size``'s default), exports it both ways, and in a fresh process per export
and run loads the SavedModel and calls ``serving_default``: the first call and the median of five
more, per batch size. TF Serving on CPU runs with ``--xla_cpu_compilation_enabled=false``: there
the grouped export does not answer at all; TensorFlow's Python runtime compiles it.
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
WAYS = ("grouped Conv2D (Keras)", "DepthwiseConv2D (for_inference)")
SCRATCH = WORK_DIR / "grouped_conv"

EXPORT = """
import sys
from pathlib import Path
import keras
from amazonia.data.labels import label_map
from amazonia.export.saved_model import export_saved_model
from amazonia.model.network import build_model, for_inference

size, work = int(sys.argv[2]), Path(sys.argv[3])
keras.utils.set_random_seed(0)
model = build_model(size, sys.argv[1])
thresholds = {"ground": {label: 0.5 for label in label_map()["ground"]}}
export_saved_model(model, work / "grouped", label_map(), thresholds)
export_saved_model(for_inference(model), work / "depthwise", label_map(), thresholds)
"""

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
    log.info("exporting %s both ways", ARCHITECTURE)
    python_last_line(EXPORT, ARCHITECTURE, IMAGE_SIZE, SCRATCH)
    for way, folder in zip(WAYS, ("grouped", "depthwise"), strict=True):
        log.info("serving %s", way)
        served = json.loads(python_last_line(SERVE, SCRATCH / folder, IMAGE_SIZE, *BATCHES))
        results["runs"].append({"way": way, **served})
    save_results("grouped_conv", settings, results)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    return format_report(results)


def format_report(results: dict) -> str:
    rows = [
        (
            r["way"],
            r["xla_functions"],
            *(
                f"{r['timings'][str(b)]['median_ms']:.0f} ({r['timings'][str(b)]['first_ms']:.0f})"
                for b in BATCHES
            ),
        )
        for r in results["runs"]
    ]
    headers = ["depthwise convolutions as", "functions XLA must compile"]
    headers += [f"batch {b}: ms (first call)" for b in BATCHES]
    return "\n".join(
        [
            f"## {results['architecture']} served: serving_default at {results['image_size']} px",
            "",
            markdown_table(headers, rows),
            "",
            f"Machine: {machine_description()}; CPU {results['cpu_busy_percent_before']:.0f}% busy before.",
        ]
    )
