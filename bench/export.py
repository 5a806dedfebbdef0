"""The SavedModel export of every ``train.architecture``: the export stage against Keras's own
``model.export`` (``keras.export.ExportArchive`` with ``track(model)``).

``python -m bench export`` (a few minutes: not in the default set) builds each architecture at
128 px (``train.image_size``'s default) in ``mixed_bfloat16`` (``train.precision``'s), saves it as
train does, and exports that file twice each way, each export in a process of its own: the
export's CPU seconds, the SavedModel's size, the values its checkpoint stores against the model's
parameters, and whether the two exports are the same bytes. The stage's export has two
signatures, one of them decoding files in the graph; ``model.export`` has one, the model alone.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from amazonia.common.params import ARCHITECTURES, TrainParams
from bench.common import (
    WORK_DIR,
    Settings,
    cpu_busy_percent,
    file_digests,
    machine_description,
    markdown_table,
    python_last_line,
    save_results,
)

log = logging.getLogger(__name__)

IMAGE_SIZE = TrainParams().image_size
PRECISION = TrainParams().precision
WAYS = ("export stage", "model.export")
SCRATCH = WORK_DIR / "export"

BUILD = """
import sys
import keras
from amazonia.model.distribute import set_precision
from amazonia.model.network import build_model, compile_model
from amazonia.model.training import save_model_atomic

set_precision(sys.argv[3])
keras.utils.set_random_seed(0)
save_model_atomic(compile_model(build_model(int(sys.argv[2]), sys.argv[1]), 0.001), sys.argv[4])
"""

EXPORT = """
import json, sys, time
from pathlib import Path
import numpy as np
import tensorflow as tf
from amazonia.data.labels import label_map
from amazonia.export.saved_model import export_saved_model, load_trained_model

way, keras_file, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
model = load_trained_model(keras_file)
thresholds = {"ground": {label: 0.5 for label in label_map()["ground"]}}
start = time.process_time()
if way == "export stage":
    export_saved_model(model, out, label_map(), thresholds)
else:
    model.export(str(out), format="tf_saved_model", verbose=False)
cpu_s = time.process_time() - start
stored = tf.train.list_variables(str(out / "variables" / "variables"))
values = sum(int(np.prod(shape)) for name, shape in stored if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
print(json.dumps({"cpu_s": cpu_s, "stored_values": values, "parameters": model.count_params()}))
"""


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def export_twice(keras_file: Path, way: str, work: Path) -> dict:
    """Two exports of ``keras_file`` ``way``, each in its own process."""
    runs = []
    for attempt in (1, 2):
        out = work / f"{way.replace(' ', '-').replace('.', '-')}-{attempt}"
        exported = json.loads(python_last_line(EXPORT, way, keras_file, out))
        runs.append({**exported, "digests": file_digests(out)})
    return {
        "way": way,
        "cpu_s": [r["cpu_s"] for r in runs],
        "mb": folder_mb(out),
        "stored_values": runs[0]["stored_values"],
        "parameters": runs[0]["parameters"],
        "same_bytes": runs[0]["digests"] == runs[1]["digests"],
    }


def run(settings: Settings) -> str:
    shutil.rmtree(SCRATCH, ignore_errors=True)
    busy = cpu_busy_percent()
    results: dict = {
        "cpu_busy_percent_before": busy,
        "image_size": IMAGE_SIZE,
        "precision": PRECISION,
        "runs": [],
    }
    for architecture in ARCHITECTURES:
        work = SCRATCH / architecture
        work.mkdir(parents=True)
        keras_file = work / "model.keras"
        log.info("building %s", architecture)
        python_last_line(BUILD, architecture, IMAGE_SIZE, PRECISION, keras_file)
        for way in WAYS:
            log.info("exporting %s: %s", architecture, way)
            results["runs"].append({"architecture": architecture, **export_twice(keras_file, way, work)})
    save_results("export", settings, results)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    return format_report(results)


def format_report(results: dict) -> str:
    rows = [
        (
            r["architecture"],
            r["way"],
            " / ".join(f"{s:.1f}" for s in r["cpu_s"]),
            f"{r['mb']:.1f}",
            f"{r['stored_values'] / r['parameters']:.2f}×",
            "yes" if r["same_bytes"] else "no",
        )
        for r in results["runs"]
    ]
    return "\n".join(
        [
            f"## Export per architecture: {results['image_size']} px, trained in {results['precision']}",
            "",
            markdown_table(
                [
                    "architecture",
                    "export",
                    "CPU s (two runs)",
                    "SavedModel MB",
                    "values stored / parameters",
                    "same bytes twice",
                ],
                rows,
            ),  # fmt: skip
            "",
            f"Machine: {machine_description()}; CPU {results['cpu_busy_percent_before']:.0f}% busy before.",
        ]
    )
