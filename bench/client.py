"""``amazonia predict``'s peak memory as the number of files grows: flat when files are streamed.

The client runs as a user runs it, a fresh ``amazonia predict`` process, against a stub
server on 127.0.0.1 that reads each request whole and answers well-formed predictions
without decoding the images, so only the client is measured. The files are one 4 MB file
named N times: the client reads each argument anew when its turn comes, as it would N
files. Peak RSS is the kernel's high-water mark (VmHWM) of the client process, not a sample.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from bench.common import WORK_DIR, Settings, cpu_busy_percent, markdown_table, save_results, timer

log = logging.getLogger(__name__)

# (files, MB each): the case is 300 files of 4 MB; 30 shows the slope in the number of
# files, 3 of 30 MB (the server's default body limit is 32 MiB) the slope in their size.
RUNS = ((30, 4), (300, 4), (3, 30))
MODEL = "PlanetModel"
ANSWERS = {
    "metadata": {"model_spec": {"name": MODEL, "signature_name": "", "version": "1"}, "metadata": {}},
    "label_map.json": {"weather": list(LABELS_WEATHER), "ground": list(LABELS_GROUND)},
    "thresholds.json": {"ground": dict.fromkeys(LABELS_GROUND, 0.5)},
}
PREDICTION = {"weather": [0.7, 0.1, 0.1, 0.1], "ground": [0.6] * len(LABELS_GROUND)}


class _Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._send(ANSWERS[self.path.rpartition("/")[2]])

    def do_POST(self) -> None:
        images = len(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"])
        self._send({"predictions": [PREDICTION] * images})

    def _send(self, answer: Any) -> None:
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def stub_server() -> Iterator[str]:
    """The stub's model URL while it runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/models/{MODEL}"
    finally:
        server.shutdown()
        server.server_close()


# `amazonia predict ARGS` as the console script runs it, then its peak RSS (VmHWM) into a file:
# not wait4's ru_maxrss, which on Linux keeps the parent's peak across fork and exec.
PREDICT_THEN_PEAK = """
import sys
from pathlib import Path
from amazonia.cli import main
status = main(sys.argv[2:])
peak = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")]
Path(sys.argv[1]).write_text(peak[0].split()[1])  # kB
sys.exit(status)
"""


def measure_predict(url: str, image: Path, count: int) -> dict:
    """Peak RSS and wall time of ``amazonia predict`` over ``image`` named ``count`` times."""
    folder = WORK_DIR / "client"
    command = [sys.executable, "-c", PREDICT_THEN_PEAK, str(folder / "peak_kb"), "predict"]
    command += [*[str(image)] * count, "--url", url]
    with timer() as took:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or len(result.stdout.splitlines()) != count:
        raise RuntimeError(f"amazonia predict exited {result.returncode}: {result.stderr[-2000:]}")
    peak_mib = int((folder / "peak_kb").read_text()) / 1024
    return {
        "files": count,
        "file_mb": image.stat().st_size / 10**6,
        "peak_rss_mib": peak_mib,
        "wall_s": took.seconds,
    }


def measure(settings: Settings) -> dict:
    busy = cpu_busy_percent()
    runs = []
    with stub_server() as url:
        for count, megabytes in RUNS:
            image = WORK_DIR / "client" / f"{megabytes}mb.jpg"
            if not image.is_file() or image.stat().st_size != megabytes * 10**6:
                image.parent.mkdir(parents=True, exist_ok=True)
                image.write_bytes(os.urandom(megabytes * 10**6))
            runs.append(measure_predict(url, image, count))
    return {"runs": runs, "cpu_busy_percent_before": busy}


def format_report(results: dict) -> str:
    runs = results["runs"]
    table = markdown_table(
        ["files", "peak RSS", "wall s", "MB/s sent"],
        [
            [
                f"{r['files']} × {r['file_mb']:g} MB",
                f"{r['peak_rss_mib']:.0f} MiB",
                f"{r['wall_s']:.1f}",
                f"{r['files'] * r['file_mb'] / r['wall_s']:.0f}",
            ]
            for r in runs
        ],
    )
    few, many, large = runs
    by_count = many["peak_rss_mib"] / few["peak_rss_mib"]
    by_size = large["peak_rss_mib"] / few["peak_rss_mib"]
    return "\n".join(
        [
            "## amazonia predict: client memory against the number and size of files",
            "",
            table,
            "",
            f"- peak RSS, {few['files']} → {many['files']} files: ×{by_count:.2f}; "
            f"{few['file_mb']:g} → {large['file_mb']:g} MB files: ×{by_size:.2f} (goal: flat)",
            f"- other CPU use before the run: {results['cpu_busy_percent_before']:.0f}%",
        ]
    )


def run(settings: Settings) -> str:
    results = measure(settings)
    save_results("client", settings, results)
    return format_report(results)
