"""Decoder bombs: what each costs TensorFlow's decoder, and what refusing it costs the check.

Each file of ``tests/image_corpus.py``'s ``BOMBS`` (built at the size the issue reports,
within the pixel budget) is decoded by ``tf.io.decode_image(channels=0,
expand_animations=False)`` in a fresh child process, which reports its CPU seconds and
how much its RSS grew at most (sampled every 5 ms); then
:func:`amazonia.data.records.images.check_image` refuses it in this process, timed.
The decode is what the server and serialize would spend without the check; the check
refuses the file before any decoder runs.

``python -m bench decoder_bombs`` (on request: a minute).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from amazonia.data.records.images import BadImageError, check_image
from bench.common import WORK_DIR, Settings, machine_description, markdown_table, save_results
from tests import image_corpus

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The sizes the issue reports: 2,000 scans of a 2048x2048 JPEG, 300 zTXt chunks, 2 GB of
# image data past a 1x1 PNG's row.
CASES = {
    "progressive JPEG, 2048x2048, its last scan repeated 2,000 times": lambda: (
        image_corpus.progressive_jpeg_repeating_its_last_scan(2048, 2000)
    ),
    "PNG 1x1 with 300 zTXt chunks of ~8 MB inflated each": lambda: image_corpus.png_with_compressed_text(300),
    "PNG 1x1 whose image data inflates 2 GB past its row": lambda: image_corpus.png_with_data_past_its_image(
        2_000_000_000
    ),
}
_DECODE = """
import json, sys, threading, time
import psutil
import tensorflow as tf
data = open(sys.argv[1], "rb").read()
process = psutil.Process()
before = peak = process.memory_info().rss
done = threading.Event()
def sample():
    global peak
    while not done.wait(0.005):
        peak = max(peak, process.memory_info().rss)
sampler = threading.Thread(target=sample)
sampler.start()
start = time.process_time()
try:
    tf.io.decode_image(data, channels=0, expand_animations=False)
    verdict = "decoded"
except tf.errors.OpError as err:
    verdict = "refused: " + str(err).split("}}")[-1].strip()[:80]
cpu = time.process_time() - start
done.set()
sampler.join()
print(json.dumps({"cpu_s": cpu, "rss_growth_mib": (peak - before) / 2**20, "verdict": verdict}))
"""


def measure_decode(path: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", _DECODE, str(path)],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_check(data: bytes) -> dict:
    start = time.perf_counter()
    try:
        check_image(data)
        verdict = "passed"
    except BadImageError as err:
        verdict = f"refused: {str(err)[:60]}..."
    return {"ms": (time.perf_counter() - start) * 1e3, "verdict": verdict}


def run(settings: Settings) -> str:
    """Measure each case, save ``bench/.work/decoder_bombs.json``, return the markdown report."""
    results = {}
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    for name, build in CASES.items():
        data = build()
        path = WORK_DIR / "bomb.bin"
        path.write_bytes(data)
        results[name] = {"bytes": len(data), "decode": measure_decode(path), "check": measure_check(data)}
        path.unlink()
        log.info("%s: %s", name, results[name])
    save_results("decoder_bombs", settings, results)
    rows = []
    for name, r in results.items():
        decode, check = r["decode"], r["check"]
        rows.append(
            [
                name,
                f"{r['bytes']:,}",
                f"{decode['cpu_s']:.2f} s, +{decode['rss_growth_mib']:,.0f} MiB ({decode['verdict']})",
                f"{check['ms']:.1f} ms ({check['verdict']})",
            ]
        )
    table = markdown_table(["file", "bytes", "tf.io.decode_image: CPU, peak RSS growth", "check_image"], rows)
    return "\n".join(["## Decoder bombs: decoding them, and refusing them", "", table])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"Machine: {machine_description()}\n")
    print(run(Settings.from_env()))
