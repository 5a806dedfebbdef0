"""Serving: latency and throughput of ``amazonia serve`` over HTTP on 127.0.0.1.

A default-size (128 px) model, untrained (weights do not change the cost), is exported
to ``bench/.work/serving/`` and served by a real ``amazonia serve`` process. Measured:

* latency (p50, p99) of one image per request, one client, for the float signature
  with the article's payload and for the bytes signature with a b64 JPEG; bodies are
  encoded once beforehand, so the numbers are the server's and the loopback's;
* the article's client as published (``requests.post(..., json=payload)``), whose
  own JSON encoding of 49,152 floats is part of what its user waits for;
* throughput with 8 concurrent clients (threads, one ``requests.Session`` each);
* ``amazonia predict`` as a user runs it: wall time per call of a fresh process (it
  imports no TensorFlow; it took 3.5 s per call when it did);
* in-process model calls at batch 1 and 8, alone and from 8 threads: whether
  batching concurrent requests into one call would pay on this machine;
* reloads: the served version re-published (as ``dvc repro`` does: an atomic exchange)
  with a changed thresholds.json, so that the reload shows: the server's RSS before and
  after 20 reloads, and p50/p99/max of one client's requests while reloads happen;
* heavy requests: p50/p99 of one client's chip requests (``serving_bytes``, one JPEG)
  alone, then while four clients send the heaviest request the default budgets allow
  (``serve.max_request_pixels``: four 4096 x 4096 PNGs) one after another;
* warmup: the first request to a newly published version, the moment it is AVAILABLE,
  against the steady p50, for versions without and with a TF Serving warmup file
  (``assets.extra/tf_serving_warmup_requests``: a chip through each signature);
* server-side batching (``batching``): 16 clients per signature against a server with
  batching off and one with it on, in interleaved rounds: requests/s, p50/p99, CPU per
  request; and each step of a request timed in process, to say where the time goes.

Client and server share the machine's cores, as they would on a laptop.
Run alone with ``python -m bench.serving`` (``python -m bench.serving heavy [batching]``: only
the heavy-request part, with server-side batching on if asked; ``warmup`` or ``batching``: only
that part); ``python -m bench`` runs it with the rest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import requests

from bench.common import (
    WORK_DIR,
    Settings,
    cpu_busy_percent,
    machine_description,
    markdown_table,
    save_results,
    timer,
)

log = logging.getLogger(__name__)

IMAGE_SIZE = 128
MODEL_NAME = "PlanetModel"
WARMUP_REQUESTS = 20
LATENCY_REQUESTS = 300
ARTICLE_CLIENT_REQUESTS = 50
THROUGHPUT_REQUESTS = 400  # per signature, split over the clients
CLIENTS = 8
MODEL_CALLS = 100  # per in-process configuration and round
MODEL_CALL_ROUNDS = 5  # the median is reported
RELOADS = 20  # for the server's RSS before/after
RELOADS_UNDER_LOAD = 5  # while one client keeps asking
RELOAD_TIMEOUT_S = 120
GOAL_P50_MS = 15.0
PREDICT_COMMAND_CALLS = 5  # fresh `amazonia predict` processes; the median is reported
PREDICT_COMMAND_BEFORE_S = 3.5  # per call when it imported TensorFlow (issue 8's figure)
BUSY_WARN_PERCENT = 10.0
START_TIMEOUT_S = 180
HEAVY_CLIENTS = 4
HEAVY_IMAGE_SIDE = 4096  # the per-image decode budget's side
HEAVY_IMAGES = 4  # per request: serve.max_request_pixels' default, 4 x 4096 x 4096
HEAVY_CHIP_REQUESTS = 100  # alone, and at least as many under the heavy load
HEAVY_MEASURE_S = 30.0  # under the heavy load, chip requests go on this long at least
HEAVY_WARMUP_S = 3.0  # the heavy clients are all under way
GOAL_HEAVY_P99_MS = 1000.0
WARMUP_RELOADS = 5  # new versions published without, then as many with, a warmup file
GOAL_FIRST_REQUEST_RATIO = 2.0  # first request after a reload <= 2x the steady p50
BATCHING_CLIENTS = 16
BATCHING_REQUESTS = 960  # per signature and server, split over the rounds and clients
BATCHING_ROUNDS = 3  # off and on alternate: a shared machine's load changes by the second
BATCHING_BATCH_SIZE = 16  # max_batch_size below; the profile's batched model call
# For this 2-core machine: TF Serving's CPU-only advice (no timeout, large batches), one batch
# thread (a model call already uses both cores), and room in the queue for every client.
BATCHING_PARAMETERS = f"""\
max_batch_size {{ value: {BATCHING_BATCH_SIZE} }}
batch_timeout_micros {{ value: 0 }}
max_enqueued_batches {{ value: {BATCHING_CLIENTS} }}
num_batch_threads {{ value: 1 }}
"""
GOAL_BATCHING_SPEEDUP = 3.0
GOAL_BATCHING_P99_MS = 50.0
PROFILE_REPEATS = 50
SCRATCH = WORK_DIR / "serving"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# --- set-up ---------------------------------------------------------------------------------


def export_model(base_path: Path) -> Path:
    """An untrained default-size model as version 1 of ``base_path``; returns the version folder."""
    import keras

    from amazonia.data.labels import label_map
    from amazonia.data.vocabulary import LABELS_GROUND
    from amazonia.export.saved_model import (
        export_saved_model,
    )
    from amazonia.model.network import build_model

    keras.utils.set_random_seed(0)
    version_dir = base_path / "1"
    thresholds = {"ground": {label: 0.5 for label in LABELS_GROUND}}
    export_saved_model(build_model(IMAGE_SIZE), version_dir, label_map(), thresholds)
    return version_dir


def write_chip(path: Path) -> Path:
    """One synthetic 256x256 Kaggle-like JPEG."""
    from amazonia.data.synthetic.generate import render_jpeg

    path.write_bytes(render_jpeg(0, ("clear", "primary", "agriculture"), seed=0))
    return path


def bodies(chip: Path) -> dict[str, bytes]:
    """The request bodies, encoded once: the article's float payload and a b64 JPEG."""
    import base64

    from keras.utils import img_to_array, load_img

    from amazonia.export.contract import (
        SIGNATURE_BYTES,
    )

    image = img_to_array(load_img(chip, target_size=(IMAGE_SIZE, IMAGE_SIZE))) / 255.0
    b64 = base64.b64encode(chip.read_bytes()).decode("ascii")
    return {
        "float (article's payload)": json.dumps({"instances": [{"input_image": image.tolist()}]}).encode(),
        "bytes (b64 JPEG)": json.dumps(
            {"signature_name": SIGNATURE_BYTES, "instances": [{"b64": b64}]}
        ).encode(),
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(base_path: Path, port: int, log_file: Path, *options: str) -> subprocess.Popen:
    """``amazonia serve`` on 127.0.0.1 with more flags ``options``, returned once it answers."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [
        sys.executable, "-m", "amazonia.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--model-name", MODEL_NAME, "--model-base-path", str(base_path), *options,
    ]  # fmt: skip
    with log_file.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT)
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"amazonia serve exited with {proc.returncode}:\n{log_file.read_text()[-4000:]}"
            )
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return proc
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"amazonia serve not ready after {START_TIMEOUT_S} s:\n{log_file.read_text()[-4000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- measurements ---------------------------------------------------------------------------


def _post(session: requests.Session, url: str, body: bytes) -> None:
    response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")


def measure_latency(url: str, send: Callable[[requests.Session], None], n: int, server_pid: int) -> dict:
    """p50/p99 of ``n`` sequential requests from one client, after a warm-up, and the
    server's CPU time per request: on a shared machine, what an idle one would wait."""
    server = psutil.Process(server_pid)
    times = []
    with requests.Session() as session:
        for _ in range(WARMUP_REQUESTS):
            send(session)
        cpu_before = sum(server.cpu_times()[:2])
        for _ in range(n):
            start = time.perf_counter()
            send(session)
            times.append((time.perf_counter() - start) * 1000)
        cpu_after = sum(server.cpu_times()[:2])
    return {
        "requests": n,
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "mean_ms": statistics.fmean(times),
        "server_cpu_ms": (cpu_after - cpu_before) * 1000 / n,
    }


def measure_throughput(url: str, body: bytes, clients: int, total: int) -> dict:
    """Requests/s with ``clients`` threads, each with its own session, ``total`` requests in all."""
    per_client = total // clients
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def client() -> None:
        with requests.Session() as session:
            _post(session, url, body)  # connect and warm up before the clock starts
            start.wait()
            for _ in range(per_client):
                try:
                    _post(session, url, body)
                except Exception as err:  # noqa: BLE001 - counted, reported below
                    errors.append(repr(err))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    with timer() as took:
        for thread in threads:
            thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {per_client * clients} requests failed, first: {errors[0]}")
    return {
        "clients": clients,
        "requests": per_client * clients,
        "requests_per_s": per_client * clients / took.seconds,
    }


def _batch_of(body: bytes, n: int) -> bytes:
    """The same request with its one instance repeated ``n`` times."""
    request = json.loads(body)
    request["instances"] = request["instances"] * n
    return json.dumps(request).encode()


def measure_model_calls(version_dir: Path) -> dict:
    """Images/s of the float signature called in-process: batch 1 alone, batch 1 from
    8 threads (what concurrent requests do now), batch 8 (what batching them would do)."""
    import tensorflow as tf

    function = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    one = tf.constant(np.random.default_rng(0).random((1, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32))
    eight = tf.concat([one] * CLIENTS, axis=0)
    for batch in (one, eight):
        function(input_image=batch)

    def sequential(batch: tf.Tensor, calls: int) -> None:
        for _ in range(calls):
            function(input_image=batch)

    def threaded() -> None:
        threads = [
            threading.Thread(target=sequential, args=(one, MODEL_CALLS // CLIENTS)) for _ in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    configurations = (
        ("batch 1, one caller", lambda: sequential(one, MODEL_CALLS), MODEL_CALLS),
        (f"batch 1, {CLIENTS} threads", threaded, MODEL_CALLS // CLIENTS * CLIENTS),
        (f"batch {CLIENTS}, one caller", lambda: sequential(eight, MODEL_CALLS // CLIENTS), MODEL_CALLS),
    )
    rates: dict[str, list[float]] = {name: [] for name, _, _ in configurations}
    for _ in range(MODEL_CALL_ROUNDS):  # interleaved: a shared machine's load changes by the second
        for name, run, images in configurations:
            with timer() as took:
                run()
            rates[name].append(images / took.seconds)
    return {name: statistics.median(values) for name, values in rates.items()}


def republish(source: Path, published: Path, mark: float) -> None:
    """Publish a copy of ``source`` over ``published`` as the smoke check does, the first
    label's threshold set to ``mark``: the assets endpoint shows when it is served."""
    from amazonia.data.vocabulary import LABELS_GROUND
    from amazonia.export.contract import ASSETS_EXTRA, THRESHOLDS_ASSET
    from amazonia.export.publish import publish

    candidate = SCRATCH / "candidate"
    shutil.rmtree(candidate, ignore_errors=True)
    shutil.copytree(source, candidate)
    thresholds_file = candidate / ASSETS_EXTRA / THRESHOLDS_ASSET
    thresholds = json.loads(thresholds_file.read_text())
    thresholds["ground"][LABELS_GROUND[0]] = mark
    thresholds_file.write_text(json.dumps(thresholds))
    publish(candidate, published)


def reload_version(source: Path, published: Path, thresholds_url: str, mark: float) -> float:
    """Re-publish version 1 marked ``mark`` and wait until the server serves it; seconds taken."""
    from amazonia.data.vocabulary import LABELS_GROUND

    start = time.perf_counter()
    republish(source, published, mark)
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        response = requests.get(thresholds_url, timeout=30)
        if response.status_code == 200 and response.json()["ground"][LABELS_GROUND[0]] == mark:
            return time.perf_counter() - start
        time.sleep(0.05)
    raise RuntimeError(f"version 1 re-published with mark {mark} not served after {RELOAD_TIMEOUT_S} s")


def _rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def measure_reload_memory(
    source: Path, published: Path, thresholds_url: str, server_pid: int, n: int
) -> dict:
    """The server's RSS before the first of ``n`` reloads, after it, and after the last."""
    before = _rss_mib(server_pid)
    seconds = []
    after_first = before
    for i in range(n):
        seconds.append(reload_version(source, published, thresholds_url, mark=round(0.01 * (i + 1), 2)))
        if i == 0:
            after_first = _rss_mib(server_pid)
    return {
        "reloads": n,
        "rss_before_mib": before,
        "rss_after_first_mib": after_first,
        "rss_after_mib": _rss_mib(server_pid),
        "reload_median_s": statistics.median(seconds),
    }


def measure_latency_during_reloads(
    url: str, body: bytes, source: Path, published: Path, thresholds_url: str, n: int
) -> dict:
    """p50/p99/max of one client's sequential requests sent while one of ``n`` reloads
    happens (from the re-publication until the new folder serves), and how many failed."""
    records: list[tuple[float, float, int]] = []  # (start, milliseconds, HTTP status)
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                start = time.perf_counter()
                response = session.post(
                    url, data=body, headers={"Content-Type": "application/json"}, timeout=60
                )
                records.append((start, (time.perf_counter() - start) * 1000, response.status_code))

    thread = threading.Thread(target=client)
    thread.start()
    windows = []
    try:
        time.sleep(1.0)  # the client is connected and steady
        for i in range(n):
            start = time.perf_counter()
            reload_version(source, published, thresholds_url, mark=round(0.5 + 0.01 * (i + 1), 2))
            windows.append((start, time.perf_counter()))
            time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    during = [(ms, status) for begun, ms, status in records if any(a <= begun <= b for a, b in windows)]
    times = [ms for ms, _ in during]
    return {
        "reloads": n,
        "requests": len(during),
        "failed": sum(status != 200 for _, status in during),
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "max_ms": max(times),
        "reload_median_s": statistics.median(b - a for a, b in windows),
    }


def measure_predict_command(model_url: str, chip: Path, calls: int = PREDICT_COMMAND_CALLS) -> dict:
    """Wall time of ``amazonia predict CHIP`` per call, each a fresh process as a user runs it
    (start-up, imports, metadata, assets and one prediction), and whether it wrote to stderr."""
    command = [str(Path(sys.executable).parent / "amazonia"), "predict", str(chip), "--url", model_url]
    times, stderr = [], ""
    for _ in range(calls):
        with timer() as took:
            result = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {result.stderr[-2000:]}")
        times.append(took.seconds)
        stderr += result.stderr
    return {"calls": calls, "median_s": statistics.median(times), "max_s": max(times), "stderr": stderr}


def heavy_body() -> bytes:
    """The heaviest request the default budgets allow: HEAVY_IMAGES PNGs of HEAVY_IMAGE_SIDE
    squared pixels (a gradient: small files, every pixel decoded and resized all the same)."""
    import base64
    import io

    from PIL import Image

    from amazonia.export.contract import SIGNATURE_BYTES

    instances = []
    for i in range(HEAVY_IMAGES):
        gradient = np.linspace(0, 255, HEAVY_IMAGE_SIDE, dtype=np.uint8)
        pixels = np.stack(
            np.broadcast_arrays(gradient[None, :], gradient[:, None], np.uint8(40 * i)), axis=-1
        )
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(buffer, format="PNG")
        instances.append({"b64": base64.b64encode(buffer.getvalue()).decode("ascii")})
    return json.dumps({"signature_name": SIGNATURE_BYTES, "instances": instances}).encode()


def _chip_latencies(url: str, body: bytes, n: int, min_seconds: float = 0.0) -> list[float]:
    """Milliseconds of at least ``n`` sequential requests, sent for ``min_seconds`` at least."""
    times = []
    with requests.Session() as session:
        for _ in range(WARMUP_REQUESTS):
            _post(session, url, body)
        until = time.perf_counter() + min_seconds
        while len(times) < n or time.perf_counter() < until:
            start = time.perf_counter()
            _post(session, url, body)
            times.append((time.perf_counter() - start) * 1000)
    return times


def measure_latency_under_heavy_requests(url: str, chip_body: bytes, heavy: bytes) -> dict:
    """p50/p99/max of sequential chip requests alone, then while HEAVY_CLIENTS clients send
    ``heavy`` back to back; and how long the heavy requests took meanwhile."""
    alone = _chip_latencies(url, chip_body, HEAVY_CHIP_REQUESTS)
    stop = threading.Event()
    heavy_seconds: list[float] = []
    errors: list[str] = []

    def heavy_client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    _post(session, url, heavy)
                except Exception as err:  # noqa: BLE001 - counted, reported below
                    errors.append(repr(err))
                    return
                heavy_seconds.append(time.perf_counter() - start)

    clients = [threading.Thread(target=heavy_client) for _ in range(HEAVY_CLIENTS)]
    for client in clients:
        client.start()
    try:
        time.sleep(HEAVY_WARMUP_S)
        loaded = _chip_latencies(url, chip_body, HEAVY_CHIP_REQUESTS, HEAVY_MEASURE_S)
    finally:
        stop.set()
        for client in clients:
            client.join()
    if errors:
        raise RuntimeError(f"{len(errors)} heavy requests failed, first: {errors[0]}")

    def summary(times: list[float]) -> dict:
        return {
            "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)),
            "max_ms": max(times),
        }

    from amazonia.common.params import load_params
    from amazonia.serving.params import load_serve_params

    served = load_serve_params(load_params(PROJECT_ROOT / "params.yaml").serve, "params.yaml")
    return {
        "decode_concurrency": served.decode_concurrency,
        "max_request_pixels": served.max_request_pixels,
        "chip_requests": len(alone),
        "chip_requests_under_heavy": len(loaded),
        "heavy_clients": HEAVY_CLIENTS,
        "heavy_images": HEAVY_IMAGES,
        "heavy_image_side": HEAVY_IMAGE_SIDE,
        "heavy_body_bytes": len(heavy),
        "alone": summary(alone),
        "under_heavy": summary(loaded),
        "heavy_requests": len(heavy_seconds),
        "heavy_median_s": statistics.median(heavy_seconds) if heavy_seconds else None,
    }


def write_warmup_file(version_dir: Path, chip: Path) -> None:
    """TF Serving's warmup file for ``version_dir``: the chip through each signature."""
    from keras.utils import img_to_array, load_img

    from amazonia.export.contract import INPUT_BYTES, SIGNATURE_BYTES, SIGNATURE_FLOAT
    from amazonia.export.warmup import WarmupRequest, write_warmup_requests
    from amazonia.model.names import INPUT_NAME

    image = img_to_array(load_img(chip, target_size=(IMAGE_SIZE, IMAGE_SIZE))) / 255.0
    write_warmup_requests(
        version_dir,
        [
            WarmupRequest(SIGNATURE_BYTES, {INPUT_BYTES: np.array([chip.read_bytes()], dtype=object)}),
            WarmupRequest(SIGNATURE_FLOAT, {INPUT_NAME: image[np.newaxis].astype(np.float32)}),
        ],
    )


def first_requests(source: Path, base_path: Path, version: int, model_url: str, payloads: dict) -> dict:
    """Publish ``source`` as ``version`` (a rename, as the smoke check publishes), wait until
    it is AVAILABLE, then time the first request of each signature to it, in ms."""
    staging = base_path / f".tmp-{version}"
    shutil.copytree(source, staging)
    staging.rename(base_path / str(version))
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while True:
        response = requests.get(f"{model_url}/versions/{version}", timeout=30)
        if response.status_code == 200 and response.json()["model_version_status"][0]["state"] == "AVAILABLE":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"version {version} not AVAILABLE after {RELOAD_TIMEOUT_S} s: {response.text}")
        time.sleep(0.01)
    times = {}
    with requests.Session() as session:
        for name, body in payloads.items():
            start = time.perf_counter()
            _post(session, f"{model_url}/versions/{version}:predict", body)
            times[name] = (time.perf_counter() - start) * 1000
    return times


def measure_warmup(settings: Settings) -> dict:
    """First-request latency after reloads without and with a warmup file, and the steady
    p50 of the same server, on a server of its own."""
    scratch = SCRATCH / "warmup"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    base_path = scratch / "models" / MODEL_NAME
    version_dir = export_model(base_path)
    plain = shutil.copytree(version_dir, scratch / "plain")
    warmed = shutil.copytree(version_dir, scratch / "warmed")
    chip = write_chip(scratch / "chip.jpg")
    write_warmup_file(warmed, chip)
    payloads = bodies(chip)
    port = _free_port()
    model_url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}"
    busy = cpu_busy_percent()
    proc = start_server(base_path, port, scratch / "serve.log")
    try:
        steady = {
            name: measure_latency(
                f"{model_url}:predict",
                lambda s, body=body: _post(s, f"{model_url}:predict", body),
                LATENCY_REQUESTS,
                proc.pid,
            )["p50_ms"]
            for name, body in payloads.items()
        }
        firsts: dict[str, list[dict]] = {"without": [], "with": []}
        version = 2
        for kind, source in (("without", plain), ("with", warmed)):
            for _ in range(WARMUP_RELOADS):
                log.info("first requests to version %d, %s a warmup file", version, kind)
                firsts[kind].append(first_requests(source, base_path, version, model_url, payloads))
                version += 1
    finally:
        stop_server(proc)
    return {
        "image_size": IMAGE_SIZE,
        "cpu_busy_percent_before": busy,
        "cpu_busy_percent_after": cpu_busy_percent(),
        "steady_p50_ms": steady,
        "first_request_ms": firsts,
    }


def format_warmup_report(results: dict) -> list[str]:
    """Lines on the first request to a newly loaded version against the steady p50."""
    warmup = results.get("warmup", results)
    if "first_request_ms" not in warmup:  # results saved before it was measured
        return []
    steady = warmup["steady_p50_ms"]
    rows, goals = [], []
    for kind, runs in warmup["first_request_ms"].items():
        for name in steady:
            first = [run[name] for run in runs]
            median = statistics.median(first)
            ratio = median / steady[name]
            rows.append(
                [
                    f"{kind} a warmup file",
                    name,
                    f"{steady[name]:.1f}",
                    f"{median:.1f}",
                    f"{max(first):.1f}",
                    f"{ratio:.1f}×",
                ]
            )
            if kind == "with":
                goals.append(
                    f"- goal first request ≤ {GOAL_FIRST_REQUEST_RATIO:g}× the steady p50, {name}: "
                    f"{_met(ratio <= GOAL_FIRST_REQUEST_RATIO)} ({ratio:.1f}×)"
                )
    runs = len(next(iter(warmup["first_request_ms"].values())))
    busy = max(warmup["cpu_busy_percent_before"], warmup["cpu_busy_percent_after"])
    return [
        "### The first request after a reload",
        "",
        f"A new version published {runs} times without, then {runs} times with, a warmup file (one chip "
        "through each signature); the moment its status says AVAILABLE, one request of each signature is "
        "timed (the bytes one first). Without a file the server calls each signature once on a tiny "
        f"sample; with one, it replays the file first. CPU busy with other work: {busy:.0f}%"
        + (" (loaded: numbers unreliable)." if busy > BUSY_WARN_PERCENT else "."),
        "",
        markdown_table(
            ["version", "signature", "steady p50 ms", "first request ms (median)", "max ms", "median / p50"],
            rows,
        ),
        "",
        *goals,
    ]


def measure_heavy(settings: Settings, batching: bool = False) -> dict:
    """Only the heavy-request measurement, on a server of its own (with server-side batching
    on, BATCHING_PARAMETERS, if ``batching``)."""
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    SCRATCH.mkdir(parents=True)
    base_path = SCRATCH / "models" / MODEL_NAME
    export_model(base_path)
    chip_body = bodies(write_chip(SCRATCH / "chip.jpg"))["bytes (b64 JPEG)"]
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict"
    options: tuple[str, ...] = ()
    if batching:
        parameters_file = SCRATCH / "batching.txt"
        parameters_file.write_text(BATCHING_PARAMETERS)
        options = ("--enable_batching", "--batching_parameters_file", str(parameters_file))
    busy = cpu_busy_percent()
    proc = start_server(base_path, port, SCRATCH / "serve.log", *options)
    try:
        heavy = measure_latency_under_heavy_requests(url, chip_body, heavy_body())
    finally:
        stop_server(proc)
    heavy["batching"] = batching
    return {
        "image_size": IMAGE_SIZE,
        "cpu_busy_percent_before": busy,
        "cpu_busy_percent_after": cpu_busy_percent(),
        "heavy": heavy,
    }


def measure_load(url: str, body: bytes, clients: int, total: int, server_pid: int) -> dict:
    """Requests/s, p50/p99 latency and CPU per request (server; this process, the clients)
    with ``clients`` threads sending ``body`` back to back, ``total`` requests in all."""
    per_client = total // clients
    times: list[float] = []
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def client() -> None:
        with requests.Session() as session:
            _post(session, url, body)  # connect and warm up before the clock starts
            start.wait()
            for _ in range(per_client):
                began = time.perf_counter()
                try:
                    _post(session, url, body)
                except Exception as err:  # noqa: BLE001 - counted, reported below
                    errors.append(repr(err))
                times.append((time.perf_counter() - began) * 1000)

    server, bench = psutil.Process(server_pid), psutil.Process()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    server_cpu, bench_cpu = sum(server.cpu_times()[:2]), sum(bench.cpu_times()[:2])
    with timer() as took:
        for thread in threads:
            thread.join()
    requests_sent = per_client * clients
    if errors:
        raise RuntimeError(f"{len(errors)} of {requests_sent} requests failed, first: {errors[0]}")
    return {
        "clients": clients,
        "requests": requests_sent,
        "requests_per_s": requests_sent / took.seconds,
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "server_cpu_ms": (sum(server.cpu_times()[:2]) - server_cpu) * 1000 / requests_sent,
        "client_cpu_ms": (sum(bench.cpu_times()[:2]) - bench_cpu) * 1000 / requests_sent,
        "times_ms": times,
    }


def profile_request(version_dir: Path, body: bytes, repeats: int = PROFILE_REPEATS) -> dict:
    """Milliseconds (median of ``repeats``) of each step ``amazonia serve`` takes for ``body``,
    in process: JSON parse, tensors (floats, or base64), budgets (image headers), the model
    (a call of this instance alone, and its share of a call of BATCHING_BATCH_SIZE), the
    answer's JSON. What HTTP and the framework cost is the server's CPU per request less these."""
    from amazonia.serving import budgets, rest
    from amazonia.serving.repository import load_version
    from amazonia.serving.server import DEFAULT_SIGNATURE, call_signature, predict_answer

    loaded = load_version(version_dir, 1)
    limits = budgets.RequestLimits(1024, 2**40)
    request = rest.parse_predict_request(body, DEFAULT_SIGNATURE)
    signature = loaded.signatures[request.signature_name]
    tensors = rest.request_tensors(request, signature.inputs)
    batch = {name: np.repeat(array, BATCHING_BATCH_SIZE, 0) for name, array in tensors.items()}
    outputs = call_signature(signature, tensors)
    steps: dict[str, Callable[[], object]] = {
        "JSON parse": lambda: rest.parse_predict_request(body, DEFAULT_SIGNATURE),
        "tensors from JSON": lambda: rest.request_tensors(request, signature.inputs),
        "budgets (image headers)": lambda: budgets.instance_pixels(tensors, limits),
        "model, alone": lambda: call_signature(signature, tensors),
        f"model, 1/{BATCHING_BATCH_SIZE} of a batch": lambda: call_signature(signature, batch),
        "answer JSON": lambda: predict_answer(outputs, request.row_format),
    }
    results = {}
    for name, step in steps.items():
        step()
        times = []
        for _ in range(repeats):
            with timer() as took:
                step()
            times.append(took.seconds * 1000)
        results[name] = statistics.median(times)
    results[f"model, 1/{BATCHING_BATCH_SIZE} of a batch"] /= BATCHING_BATCH_SIZE
    return results


def _pooled(rounds: list[dict]) -> dict:
    """Rounds of :func:`measure_load` as one: the median rate, percentiles of every request."""
    times = [ms for r in rounds for ms in r["times_ms"]]
    return {
        "rounds": len(rounds),
        "requests": sum(r["requests"] for r in rounds),
        "requests_per_s": statistics.median(r["requests_per_s"] for r in rounds),
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "server_cpu_ms": statistics.fmean(r["server_cpu_ms"] for r in rounds),
        "client_cpu_ms": statistics.fmean(r["client_cpu_ms"] for r in rounds),
    }


def measure_batching(settings: Settings) -> dict:
    """Throughput and latency of BATCHING_CLIENTS clients per signature, batching off and on
    (BATCHING_PARAMETERS), each on a server of its own, in interleaved rounds (a shared
    machine's load changes by the second); and where a request's time goes."""
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    SCRATCH.mkdir(parents=True)
    base_path = SCRATCH / "models" / MODEL_NAME
    version_dir = export_model(base_path)
    payloads = bodies(write_chip(SCRATCH / "chip.jpg"))
    parameters_file = SCRATCH / "batching.txt"
    parameters_file.write_text(BATCHING_PARAMETERS)
    log.info("profiling one request of each signature in process")
    profile = {name: profile_request(version_dir, body) for name, body in payloads.items()}
    busy = cpu_busy_percent()
    configurations = {
        "off": (),
        "on": ("--enable_batching", "--batching_parameters_file", str(parameters_file)),
    }
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    rounds: dict[str, dict[str, list[dict]]] = {name: {c: [] for c in configurations} for name in payloads}
    try:
        for configuration, options in configurations.items():
            port = _free_port()
            url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict"
            log_file = SCRATCH / f"serve-batching-{configuration}.log"
            servers[configuration] = (start_server(base_path, port, log_file, *options), url)
        for i in range(BATCHING_ROUNDS):
            for name, body in payloads.items():
                for configuration, (proc, url) in servers.items():
                    log.info(
                        "round %d, %s, batching %s: %d clients", i + 1, name, configuration, BATCHING_CLIENTS
                    )
                    rounds[name][configuration].append(
                        measure_load(
                            url, body, BATCHING_CLIENTS, BATCHING_REQUESTS // BATCHING_ROUNDS, proc.pid
                        )
                    )
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
    runs = {
        name: {configuration: _pooled(results) for configuration, results in by_configuration.items()}
        for name, by_configuration in rounds.items()
    }
    return {
        "image_size": IMAGE_SIZE,
        "cpu_busy_percent_before": busy,
        "cpu_busy_percent_after": cpu_busy_percent(),
        "batching_parameters": BATCHING_PARAMETERS,
        "runs": runs,
        "profile_ms": profile,
    }


def measure(settings: Settings) -> dict:
    """Everything in :func:`format_report`, with the server started and always stopped."""
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    SCRATCH.mkdir(parents=True)
    base_path = SCRATCH / "models" / MODEL_NAME
    version_dir = export_model(base_path)
    source = shutil.copytree(version_dir, SCRATCH / "export")  # what re-publications copy
    payloads = bodies(write_chip(SCRATCH / "chip.jpg"))
    model_calls = measure_model_calls(version_dir)  # before the server runs: alone on the cores

    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict"
    busy = cpu_busy_percent()
    if busy > BUSY_WARN_PERCENT:
        log.warning("%.0f%% CPU in use by other processes before timing: numbers will be low", busy)
    proc = start_server(base_path, port, SCRATCH / "serve.log")
    try:
        rows = {}
        for name, body in payloads.items():
            log.info("timing %s", name)
            rows[name] = {
                "body_bytes": len(body),
                **measure_latency(url, lambda s, body=body: _post(s, url, body), LATENCY_REQUESTS, proc.pid),
                **measure_throughput(url, body, CLIENTS, THROUGHPUT_REQUESTS),
            }
        batched = {
            name: measure_throughput(url, _batch_of(body, CLIENTS), 1, THROUGHPUT_REQUESTS // CLIENTS)
            for name, body in payloads.items()
        }
        article = json.loads(payloads["float (article's payload)"])
        log.info("timing the article's client as published")
        article_client = measure_latency(
            url,
            lambda s: s.post(url, json=article, timeout=60).raise_for_status(),
            ARTICLE_CLIENT_REQUESTS,
            proc.pid,
        )
        log.info("timing the amazonia predict command")
        predict_command = measure_predict_command(url.removesuffix(":predict"), SCRATCH / "chip.jpg")
        thresholds_url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}/versions/1/assets/thresholds.json"
        log.info("timing requests during %d reloads, then %d reloads for memory", RELOADS_UNDER_LOAD, RELOADS)
        float_body = payloads["float (article's payload)"]
        during_reloads = measure_latency_during_reloads(
            url, float_body, source, version_dir, thresholds_url, RELOADS_UNDER_LOAD
        )
        reload_memory = measure_reload_memory(source, version_dir, thresholds_url, proc.pid, RELOADS)
        log.info("timing chip requests alone and under %d heavy clients", HEAVY_CLIENTS)
        heavy = measure_latency_under_heavy_requests(url, payloads["bytes (b64 JPEG)"], heavy_body())
    finally:
        stop_server(proc)
    busy_after = cpu_busy_percent()
    log.info("timing first requests after reloads, without and with a warmup file")
    warmup = measure_warmup(settings)
    return {
        "image_size": IMAGE_SIZE,
        "cpu_busy_percent_before": busy,
        "cpu_busy_percent_after": busy_after,
        "signatures": rows,
        "article_client": article_client,
        "predict_command": predict_command,
        "one_client_batches_of_8": batched,
        "model_calls_images_per_s": model_calls,
        "during_reloads": during_reloads,
        "reload_memory": reload_memory,
        "heavy": heavy,
        "warmup": warmup,
        "goal_p50_ms": GOAL_P50_MS,
    }


# --- report ---------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def _predict_command_lines(command: dict | None) -> list[str]:
    if command is None:  # results saved before it was measured
        return []
    quiet = "nothing on stderr" if not command["stderr"] else f"stderr: {command['stderr'][:200]!r}"
    return [
        f"- `amazonia predict` one chip, wall time per call (a fresh process; median of {command['calls']}): "
        f"{command['median_s']:.2f} s, max {command['max_s']:.2f} s; was {PREDICT_COMMAND_BEFORE_S:g} s "
        f"when it imported TensorFlow ({PREDICT_COMMAND_BEFORE_S / command['median_s']:.0f}× faster); {quiet}"
    ]


def format_report(results: dict) -> str:
    """The markdown tables and goal lines of one run."""
    rows = results["signatures"]
    table = markdown_table(
        [
            "signature, one image per request",
            "body",
            "p50 ms",
            "p99 ms",
            "server CPU ms/req",
            f"req/s, {CLIENTS} clients",
        ],
        [
            [name, f"{r['body_bytes'] / 1024:,.0f} KiB"]
            + [
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['server_cpu_ms']:.1f}",
                f"{r['requests_per_s']:.0f}",
            ]
            for name, r in rows.items()
        ],
    )
    calls = results["model_calls_images_per_s"]
    batched = results["one_client_batches_of_8"]
    batching = markdown_table(
        ["what", "images/s"],
        [[f"model call in-process, float, {name}", f"{v:.0f}"] for name, v in calls.items()]
        + [
            [f"HTTP, {name}, {CLIENTS} clients x 1 image", f"{r['requests_per_s']:.0f}"]
            for name, r in rows.items()
        ]
        + [
            [f"HTTP, {name}, 1 client x {CLIENTS} images", f"{r['requests_per_s'] * CLIENTS:.0f}"]
            for name, r in batched.items()
        ],
    )
    article = results["article_client"]
    goals = [
        f"- goal p50 ≤ {GOAL_P50_MS:g} ms, {name}: {_met(r['p50_ms'] <= GOAL_P50_MS)} ({r['p50_ms']:.1f} ms)"
        for name, r in rows.items()
    ]
    busy_before, busy_after = results["cpu_busy_percent_before"], results["cpu_busy_percent_after"]
    unreliable = max(busy_before, busy_after) > BUSY_WARN_PERCENT
    return "\n".join(
        [
            f"## Serving: amazonia serve over HTTP, {results['image_size']} px model",
            "",
            f"{LATENCY_REQUESTS} sequential requests for latency (after {WARMUP_REQUESTS} warm-up), "
            f"{THROUGHPUT_REQUESTS} for throughput; client and server on the same cores. CPU busy with other "
            f"work just before/after: {busy_before:.0f}%/{busy_after:.0f}%"
            + (" (numbers unreliable)." if unreliable else "."),
            "",
            table,
            "",
            *goals,
            "- the article's client as published (its own JSON encoding included): "
            f"p50 {article['p50_ms']:.1f} ms, p99 {article['p99_ms']:.1f} ms "
            f"over {article['requests']} requests",
            *_predict_command_lines(results.get("predict_command")),
            "",
            "### Would batching concurrent requests pay?",
            "",
            f"Model calls: median of {MODEL_CALL_ROUNDS} interleaved rounds. {CLIENTS} images in one HTTP "
            f"request bound from above what merging {CLIENTS} concurrent requests into one model call could "
            "give: they also share one parse and one HTTP exchange, which server-side batching would not.",
            "",
            batching,
            "",
            *format_reload_report(results),
            "",
            *format_heavy_report(results),
            "",
            *format_warmup_report(results),
        ]
    )


def format_reload_report(results: dict) -> list[str]:
    """Lines on reloads: latency while they happen, and the server's memory across them."""
    during, memory = results["during_reloads"], results["reload_memory"]
    steady = results["signatures"]["float (article's payload)"]
    growth = memory["rss_after_mib"] - memory["rss_after_first_mib"]
    return [
        "### Reloads",
        "",
        "Version 1 re-published (an atomic exchange, as the smoke check does) with a changed "
        "thresholds.json; a reload lasts from the re-publication until the server answers from the "
        f"new folder (median {during['reload_median_s']:.1f} s, the poll for which a new folder must stay "
        "unchanged included).",
        "",
        markdown_table(
            ["float payload, one client", "requests", "failed", "p50 ms", "p99 ms", "max ms"],
            [
                [
                    "no reload (the latency run above)",
                    "",
                    0,
                    f"{steady['p50_ms']:.1f}",
                    f"{steady['p99_ms']:.1f}",
                    "",
                ],
                [
                    f"during {during['reloads']} reloads",
                    during["requests"],
                    during["failed"],
                    f"{during['p50_ms']:.1f}",
                    f"{during['p99_ms']:.1f}",
                    f"{during['max_ms']:.0f}",
                ],
            ],
        ),
        "",
        f"- server RSS across {memory['reloads']} reloads: {memory['rss_before_mib']:.0f} MiB before, "
        f"{memory['rss_after_first_mib']:.0f} after the first, {memory['rss_after_mib']:.0f} after the last "
        f"({growth:+.0f} MiB over the last {memory['reloads'] - 1}, "
        f"{growth / max(memory['reloads'] - 1, 1):+.1f} per reload)",
    ]


def format_heavy_report(results: dict) -> list[str]:
    """Lines on a chip's latency while the heaviest allowed requests run."""
    heavy = results.get("heavy")
    if heavy is None:  # results saved before it was measured
        return []
    side = heavy["heavy_image_side"]
    alone, loaded = heavy["alone"], heavy["under_heavy"]
    p99 = loaded["p99_ms"]
    return [
        "### A chip while the heaviest allowed requests run",
        "",
        f"One client sends a b64 JPEG chip, one request after another, alone ({heavy['chip_requests']} "
        f"requests), then ({heavy['chip_requests_under_heavy']} requests) while {heavy['heavy_clients']} "
        "clients each send, back to back, the heaviest request the "
        f"default budgets allow: {heavy['heavy_images']} PNGs of {side} x {side} "
        f"({heavy['heavy_body_bytes'] / 1024:,.0f} KiB of JSON; serve.max_request_pixels), "
        f"{heavy['heavy_requests']} of them meanwhile, median "
        f"{heavy['heavy_median_s'] or 0:.1f} s each; serve.decode_concurrency "
        f"{heavy.get('decode_concurrency', '?')}; server-side batching "
        + (f"on ({_one_line(BATCHING_PARAMETERS)})." if heavy.get("batching") else "off."),
        "",
        markdown_table(
            ["chip request, serving_bytes", "p50 ms", "p99 ms", "max ms"],
            [
                ["alone", f"{alone['p50_ms']:.1f}", f"{alone['p99_ms']:.1f}", f"{alone['max_ms']:.0f}"],
                [
                    f"while {heavy['heavy_clients']} heavy clients run",
                    f"{loaded['p50_ms']:.1f}",
                    f"{p99:.1f}",
                    f"{loaded['max_ms']:.0f}",
                ],
            ],
        ),
        "",
        f"- goal p99 < {GOAL_HEAVY_P99_MS:g} ms under the heavy load: {_met(p99 < GOAL_HEAVY_P99_MS)} "
        f"({p99:.0f} ms)",
    ]


def _one_line(parameters: str) -> str:
    return "; ".join(line.strip() for line in parameters.strip().splitlines())


def format_batching_report(results: dict) -> list[str]:
    """Lines on server-side batching: throughput and latency off and on, and a request's steps."""
    runs, profile = results["runs"], results["profile_ms"]
    rows = []
    for name, by_configuration in runs.items():
        for configuration, r in by_configuration.items():
            rows.append(
                [
                    name,
                    configuration,
                    f"{r['requests_per_s']:.0f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    f"{r['server_cpu_ms']:.2f}",
                    f"{r['client_cpu_ms']:.2f}",
                ]
            )
    goals = []
    for name, by_configuration in runs.items():
        speedup = by_configuration["on"]["requests_per_s"] / by_configuration["off"]["requests_per_s"]
        p99 = by_configuration["on"]["p99_ms"]
        met = speedup >= GOAL_BATCHING_SPEEDUP and p99 <= GOAL_BATCHING_P99_MS
        goals.append(
            f"- goal ≥ {GOAL_BATCHING_SPEEDUP:g}× the unbatched throughput at p99 ≤ "
            f"{GOAL_BATCHING_P99_MS:g} ms, {name}: {_met(met)} ({speedup:.2f}×, p99 {p99:.1f} ms)"
        )
    steps = list(next(iter(profile.values())))
    shares = f"model, 1/{BATCHING_BATCH_SIZE} of a batch"
    bounds = []
    for name, by_step in profile.items():
        off = runs[name]["off"]
        per_request = off["server_cpu_ms"] + off["client_cpu_ms"]
        saved = by_step["model, alone"] - by_step[shares]
        rest = off["server_cpu_ms"] - sum(v for step, v in by_step.items() if step != shares)
        bounds.append(
            f"- {name}: {per_request:.1f} ms of CPU per request without batching ({off['server_cpu_ms']:.1f} "
            f"server, {off['client_cpu_ms']:.1f} client), of which the model {by_step['model, alone']:.1f}, "
            f"JSON and tensors {by_step['JSON parse'] + by_step['tensors from JSON']:.1f}, HTTP, framework "
            f"and thread hops about {max(rest, 0):.1f}; batching saves at most {saved:.1f} ms of it (the "
            f"model's share of a call of {BATCHING_BATCH_SIZE}), so it can raise throughput "
            f"{per_request / max(per_request - saved, 1e-9):.2f}× at most"
        )
    busy_before, busy_after = results["cpu_busy_percent_before"], results["cpu_busy_percent_after"]
    return [
        f"### Server-side batching, {BATCHING_CLIENTS} clients, {results['image_size']} px model",
        "",
        f"{BATCHING_REQUESTS} requests of one image per signature and configuration, in "
        f"{BATCHING_ROUNDS} rounds, off and on in turn (req/s: the median round; percentiles: all requests), "
        f"{BATCHING_CLIENTS} clients (threads of this process, on the server's cores) sending back to "
        f"back. CPU busy with other work just before/after: {busy_before:.0f}%/{busy_after:.0f}%. "
        f"Batching parameters: {_one_line(results['batching_parameters'])}.",
        "",
        markdown_table(
            [
                "signature",
                "batching",
                "req/s",
                "p50 ms",
                "p99 ms",
                "server CPU ms/req",
                "client CPU ms/req",
            ],
            rows,
        ),
        "",
        *goals,
        "",
        "Where a request's time goes, in process (median ms; the model alone, and its share of a call of "
        f"{BATCHING_BATCH_SIZE}):",
        "",
        markdown_table(
            ["signature", *steps],
            [[name, *(f"{by_step[step]:.2f}" for step in steps)] for name, by_step in profile.items()],
        ),
        "",
        *bounds,
    ]


def run(settings: Settings) -> str:
    """Measure, save ``bench/.work/serving.json`` and return the markdown report."""
    results = measure(settings)
    save_results("serving", settings, results)
    return format_report(results)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"Machine: {machine_description()}\n")
    if sys.argv[1:] == ["batching"]:
        batching_results = measure_batching(Settings.from_env())
        save_results("serving_batching", Settings.from_env(), batching_results)
        print("\n".join(format_batching_report(batching_results)))
    elif sys.argv[1:2] == ["heavy"]:
        only_heavy = measure_heavy(Settings.from_env(), batching=sys.argv[2:] == ["batching"])
        save_results("serving_heavy", Settings.from_env(), only_heavy)
        print("\n".join(format_heavy_report(only_heavy)))
    elif sys.argv[1:] == ["warmup"]:
        only_warmup = measure_warmup(Settings.from_env())
        save_results("serving_warmup", Settings.from_env(), only_warmup)
        print("\n".join(format_warmup_report(only_warmup)))
    else:
        print(run(Settings.from_env()))
