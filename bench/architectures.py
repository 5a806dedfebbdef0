"""Training speed of every ``train.architecture``: images/s at each precision, and size.

``python -m bench architectures`` (minutes: not in the default set) serializes the first 96
of the shared synthetic chips (``--n``) and trains each architecture on them at 128 px
(``train.image_size``'s default) in ``float32`` and ``mixed_bfloat16``, each run in a process of its
own (``bench.train_speed``): images/s over fixed timed batches after untimed ones (tracing, the
first decode), every layer training. A frozen warm-up (``train.weights: imagenet``'s first
epochs) runs faster than these numbers.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

from amazonia.common.params import ARCHITECTURES, TrainParams
from bench.common import (
    WORK_DIR,
    Settings,
    chip_set,
    cpu_busy_percent,
    machine_description,
    markdown_table,
    save_results,
    tool_env,
)
from bench.serialize import PROJECT_ROOT, SHARD_MB

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "mixed_bfloat16")
IMAGE_SIZE = TrainParams().image_size
BATCH_SIZE = 32
# Untimed, then timed batches: the large backbones run a few images/s on 2 cores.
WARMUP_BATCHES, TIMED_BATCHES = 3, 10
# The untimed batches are one whole epoch: it fills the decoded-chip cache, so the timed
# batches measure the model, not JPEG decoding (epochs repeat).
SPLIT_CHIPS = WARMUP_BATCHES * BATCH_SIZE
SCRATCH = WORK_DIR / "architectures"


def training_speed(split_dir, architecture: str, precision: str) -> dict:
    """``bench.train_speed``'s JSON line for one architecture and precision."""
    result = subprocess.run(
        [
            sys.executable, "-m", "bench.train_speed", str(split_dir), "--architecture", architecture,
            "--precision", precision, "--image-size", str(IMAGE_SIZE), "--batch-size", str(BATCH_SIZE),
            "--steps", str(TIMED_BATCHES), "--warmup", str(WARMUP_BATCHES),
        ],
        cwd=PROJECT_ROOT, env=tool_env(), capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        log.warning("%s %s failed:\n%s", architecture, precision, result.stderr[-2000:])
        return {"architecture": architecture, "precision": precision, "error": result.stderr[-300:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(settings: Settings) -> str:
    from amazonia.data.records.writer import write_split

    chips = chip_set(settings.n, settings.seed)
    split = SCRATCH / "train"
    shutil.rmtree(split, ignore_errors=True)
    write_split(chips.head(min(settings.n, SPLIT_CHIPS)), chips.root, split, split="train", shard_mb=SHARD_MB)
    busy = cpu_busy_percent()
    runs = []
    for architecture in ARCHITECTURES:
        for precision in PRECISIONS:
            log.info("training %s in %s", architecture, precision)
            runs.append(training_speed(split, architecture, precision))
    results = {"cpu_busy_percent_before": busy, "runs": runs}
    save_results("architectures", settings, results)
    return format_report(results)


def format_report(results: dict) -> str:
    by_key = {(r["architecture"], r["precision"]): r for r in results["runs"]}
    rows = []
    for architecture in ARCHITECTURES:
        speeds = [by_key[(architecture, p)].get("images_per_s") for p in PRECISIONS]
        parameters = next((by_key[(architecture, p)].get("parameters") for p in PRECISIONS), None)
        cells = [f"{s:,.1f}" if s else "failed" for s in speeds]
        ratio = f"{speeds[1] / speeds[0]:.2f}×" if all(speeds) else ""
        rows.append((architecture, f"{parameters:,}" if parameters else "", *cells, ratio))
    return "\n".join(
        [
            f"## Training speed per architecture: {IMAGE_SIZE} px, batch {BATCH_SIZE}, every layer training",
            "",
            markdown_table(
                ["architecture", "parameters", *(f"{p} images/s" for p in PRECISIONS), "bf16 / f32"], rows
            ),
            "",
            f"Machine: {machine_description()}; CPU {results['cpu_busy_percent_before']:.0f}% busy before.",
        ]
    )
