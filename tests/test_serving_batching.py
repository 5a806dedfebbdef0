"""Server-side batching (TF Serving's ``--enable_batching``): the batching parameters file
and the batch scheduler in process, then one ``amazonia serve`` with batching on, spoken to
by concurrent clients; each batch it runs is a line of its log (``-v``)."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from amazonia.cli import main
from amazonia.export.contract import SIGNATURE_BYTES, SIGNATURE_FLOAT
from amazonia.serving import budgets
from amazonia.serving.batching import BatchScheduler
from amazonia.serving.batching_parameters import (
    BatchingParameters,
    BatchingParametersError,
    load_batching_parameters,
    read_batching_parameters,
)
from amazonia.serving.params import ServeParams
from amazonia.serving.rest import RestError, bad_request
from tests.conftest import SERVER_PARAMS, SIZE, Exported, Server, serving

TIMEOUT_S = 1.5  # batch_timeout_micros of the server below: an open batch waits this long for more
BATCHING_FILE = f"""\
# A batch holds 4 instances, waits {TIMEOUT_S:g} s for them; one batch may wait, one runs.
max_batch_size {{ value: 4 }}
batch_timeout_micros {{ value: {int(TIMEOUT_S * 1e6)} }}
max_enqueued_batches {{ value: 1 }}
num_batch_threads {{ value: 1 }}
"""
WAIT_S = 60  # a bound on any wait for the server: a failure, not a measurement
QUEUED_S = 0.3  # for a request sent in a thread to be in its batch before the next is sent
BATCH_LINE = re.compile(
    r"INFO amazonia\.serving\.batching: PlanetModel version 1 (?P<signature>\w+): batch of (?P<rows>\d+) "
    r"instances? from (?P<requests>\d+) requests? \((?P<pixels>[\d,]+) decoded pixels"
)


# --- the batching parameters file -----------------------------------------------------------


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "batching.txt"
    path.write_text(text)
    return path


def test_a_tf_serving_batching_parameters_file_is_read_with_its_defaults(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "max_batch_size { value: 32 }  # a comment\nbatch_timeout_micros { value: 2000 }\n"
        "allowed_batch_sizes: 8\nallowed_batch_sizes: 32\nthread_pool_name { value: 'batch' }\n",
    )
    parameters = read_batching_parameters(path)
    assert parameters == BatchingParameters(
        max_batch_size=32, batch_timeout_micros=2000, allowed_batch_sizes=(8, 32), thread_pool_name="batch"
    )
    assert (parameters.max_enqueued_batches, parameters.enable_large_batch_splitting) == (10, False)
    on = ServeParams(enable_batching=True)
    assert load_batching_parameters(on) == BatchingParameters()  # TF Serving's defaults without a file
    assert load_batching_parameters(ServeParams()) is None  # off by default, as in TF Serving


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "max_batch_size { value: 32 }\nmax_batch_sise { value: 3 }\n",
            '{path}:2:1: Message type "tensorflow.serving.BatchingParameters" has no field named '
            '"max_batch_sise"; the file is TF Serving\'s BatchingParameters in text format, e.g. '
            "'max_batch_size { value: 32 }'",
        ),
        (
            "max_batch_size { value: 0 }",
            "{path}: max_batch_size: must be at least 1 and at most 1,000,000 (got 0)",
        ),
        (
            "batch_timeout_micros { value: 3600000000 }",
            "{path}: batch_timeout_micros: must be at least 0 and at most 60,000,000 (got 3,600,000,000)",
        ),
        (
            "max_batch_size { value: 32 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n",
            "{path}: Last entry in allowed_batch_sizes must match max_batch_size; last entry was 16; "
            "expected 32",
        ),
        (
            "max_batch_size { value: 32 }\nallowed_batch_sizes: 16\nallowed_batch_sizes: 8\n",
            "{path}: allowed_batch_sizes entries must be positive and monotonically increasing (got [16, 8])",
        ),
        (
            "max_batch_size { value: 8 }\nenable_large_batch_splitting { value: true }\n"
            "max_execution_batch_size { value: 16 }\n",
            "{path}: max_execution_batch_size (16) is larger than max_batch_size (8); a batch cannot hold "
            "more than a request may",
        ),
        (
            "pad_variable_length_inputs: true",
            "{path}: pad_variable_length_inputs: true is not supported: amazonia serve never pads an "
            "input; requests whose inputs differ in shape beyond the batch dimension are batched apart. "
            "Drop the line",
        ),
    ],
)
def test_a_bad_batching_parameters_file_names_its_line_or_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(BatchingParametersError) as raised:
        read_batching_parameters(path)
    assert str(raised.value) == message.replace("{path}", str(path))


def test_amazonia_serve_refuses_a_batching_file_without_batching_before_it_loads_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _file(tmp_path, "max_batch_size { value: 4 }")
    models = tmp_path / "models"
    models.mkdir()
    status = main(["serve", "--model-base-path", str(models), "--batching_parameters_file", str(path)])
    assert status == 1
    assert capsys.readouterr().err == (
        f"error: serve.batching_parameters_file (--batching_parameters_file) is {str(path)!r} but batching "
        "is off: set serve.enable_batching (--enable_batching) too, or drop the file\n"
    )
    path.write_text("max_batch_size { value: -1 }")
    status = main(
        [
            "serve",
            "--model-base-path",
            str(models),
            "--enable_batching",
            "--batching_parameters_file",
            str(path),
        ]
    )
    assert status == 1
    assert capsys.readouterr().err == (
        f"error: {path}: max_batch_size: must be at least 1 and at most 1,000,000 (got -1)\n"
    )


# --- the batch scheduler, in process ------------------------------------------------------


class Doubling:
    """A model that doubles its input ``x``, refuses negative values as a model refuses
    bytes that are no image, and records the instances of each call."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = tensors["x"]
        self.calls.append(x.tolist())
        if (x < 0).any():
            raise bad_request("negative input")
        return {"y": 2 * x}


def _scheduler(**parameters: object) -> BatchScheduler:
    return BatchScheduler(BatchingParameters(**{"num_batch_threads": 1, **parameters}))


async def _ask(
    scheduler: BatchScheduler, model: Doubling, values: list[float], pixels: int = 0, key: str = "a"
):
    x = np.array(values, dtype=np.float32)
    return await scheduler.run(key, key, model, {"x": x}, [pixels] * len(values))


def _run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario(), WAIT_S))


def test_concurrent_requests_share_calls_up_to_the_batch_size_and_get_their_own_rows() -> None:
    model = Doubling()

    async def scenario() -> None:
        scheduler = _scheduler(max_batch_size=4, batch_timeout_micros=50_000)
        answers = await asyncio.gather(*(_ask(scheduler, model, [i]) for i in range(6)))
        assert [a["y"].tolist() for a in answers] == [[2 * i] for i in range(6)]
        assert scheduler.stats.batches == 2 and scheduler.stats.requests == 6
        scheduler.close()

    _run(scenario)
    assert model.calls == [[0, 1, 2, 3], [4, 5]]  # the first full at once, the rest at the timeout


def test_a_lone_instance_is_called_twice_over_so_its_answer_does_not_depend_on_the_load() -> None:
    model = Doubling()

    async def scenario() -> None:
        scheduler = _scheduler(max_batch_size=4)
        assert (await _ask(scheduler, model, [7]))["y"].tolist() == [14]
        scheduler.close()

    _run(scenario)
    assert model.calls == [[7, 7]]


def test_a_full_queue_is_503_and_a_request_over_the_batch_size_400_in_tf_servings_words() -> None:
    model = Doubling()

    async def scenario() -> None:
        scheduler = _scheduler(max_batch_size=4, batch_timeout_micros=10_000_000, max_enqueued_batches=1)
        with pytest.raises(RestError) as raised:
            await _ask(scheduler, model, [1, 2, 3, 4, 5])
        assert raised.value.status == 400
        assert raised.value.message.startswith("Task size 5 is larger than maximum input batch size 4 ")
        waiting = asyncio.ensure_future(_ask(scheduler, model, [1, 2, 3]))  # waits for the timeout
        await asyncio.sleep(0)
        with pytest.raises(RestError) as raised:
            await _ask(scheduler, model, [4, 5])
        assert raised.value.status == 503
        assert raised.value.message.startswith(
            "The batch scheduling queue to which this task was submitted is full; currently 1 batches "
            "enqueued and max_enqueued_batches is 1 "
        )
        assert scheduler.stats.queue_full == 1
        assert (await _ask(scheduler, model, [6]))["y"].tolist() == [12]  # fits the open batch: runs it
        assert (await waiting)["y"].tolist() == [2, 4, 6]
        scheduler.close()

    _run(scenario)
    assert model.calls == [[1, 2, 3, 6]]


def test_with_large_batch_splitting_a_request_is_split_over_batches_in_order() -> None:
    model = Doubling()

    async def scenario() -> None:
        scheduler = _scheduler(
            max_batch_size=8,
            enable_large_batch_splitting=True,
            max_execution_batch_size=3,
            batch_timeout_micros=0,
        )
        assert (await _ask(scheduler, model, [1, 2, 3, 4, 5, 6, 7]))["y"].tolist() == [2, 4, 6, 8, 10, 12, 14]
        scheduler.close()

    _run(scenario)
    assert model.calls == [[1, 2, 3], [4, 5, 6], [7, 7]]


def test_a_batch_decodes_at_most_the_batch_pixel_budget() -> None:
    model = Doubling()
    half = budgets.MAX_BATCH_PIXELS // 2 + 1

    async def scenario() -> None:
        scheduler = _scheduler(max_batch_size=8, batch_timeout_micros=50_000)
        await asyncio.gather(*(_ask(scheduler, model, [i], pixels=half) for i in range(3)))
        scheduler.close()

    _run(scenario)
    assert model.calls == [[0, 0], [1, 1], [2, 2]]  # two would pass the budget together

    async def split() -> None:  # one request of three such instances, split over batches
        scheduler = _scheduler(max_batch_size=8, enable_large_batch_splitting=True)
        assert (await _ask(scheduler, model, [3, 4, 5], pixels=half))["y"].tolist() == [6, 8, 10]
        scheduler.close()

    model.calls.clear()
    _run(split)
    assert model.calls == [[3, 3], [4, 4], [5, 5]]


def test_batches_are_padded_to_an_allowed_size_with_the_last_requests_first_instance() -> None:
    model = Doubling()

    async def scenario() -> None:
        scheduler = _scheduler(max_batch_size=8, allowed_batch_sizes=(4, 8), batch_timeout_micros=50_000)
        answers = await asyncio.gather(_ask(scheduler, model, [1]), _ask(scheduler, model, [2, 3]))
        assert [a["y"].tolist() for a in answers] == [[2], [4, 6]]
        assert scheduler.stats.padding == 1
        scheduler.close()

    _run(scenario)
    assert model.calls == [[1, 2, 3, 2]]


def test_a_request_the_model_refuses_fails_alone_not_its_batch() -> None:
    model = Doubling()

    async def scenario() -> None:
        scheduler = _scheduler(max_batch_size=4, batch_timeout_micros=50_000)
        good, bad = await asyncio.gather(
            _ask(scheduler, model, [1, 2]), _ask(scheduler, model, [-1]), return_exceptions=True
        )
        assert good["y"].tolist() == [2, 4]
        assert isinstance(bad, RestError) and (bad.status, bad.message) == (400, "negative input")
        scheduler.close()

    _run(scenario)
    assert model.calls == [[1, 2, -1], [1, 2], [-1, -1]]


def test_different_queues_never_share_a_call_and_a_cancelled_request_leaves_its_batch() -> None:
    model = Doubling()

    async def scenario() -> None:
        scheduler = _scheduler(max_batch_size=4, batch_timeout_micros=50_000)
        cancelled = asyncio.ensure_future(_ask(scheduler, model, [9], key="a"))
        await asyncio.sleep(0)
        cancelled.cancel()
        answers = await asyncio.gather(
            _ask(scheduler, model, [1], key="a"),
            _ask(scheduler, model, [2], key="b"),
            _ask(scheduler, model, [3], key="a"),
        )
        assert [a["y"].tolist() for a in answers] == [[2], [4], [6]]
        scheduler.close()

    _run(scenario)
    assert sorted(model.calls) == [[1, 3], [2, 2]]


# --- a server with batching on --------------------------------------------------------------


@pytest.fixture(scope="module")
def batching_server(exported: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("batching-server")
    (folder / "batching.txt").write_text(BATCHING_FILE)
    params = {**SERVER_PARAMS, "enable_batching": True, "batching_parameters_file": "batching.txt"}
    yield from serving(exported.base_path, folder, params, "-v")


def _batches(server: Server, after: int = 0) -> list[dict[str, str]]:
    """The batches the server logged, past the first ``after`` characters of its log."""
    return [match.groupdict() for match in BATCH_LINE.finditer(server.log.read_text()[after:])]


def _concurrently(server: Server, bodies: list[dict]) -> list[requests.Response]:
    """``bodies`` posted at once, one thread each; their answers in order."""
    answers: list[requests.Response | None] = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def send(i: int) -> None:
        start.wait()
        answers[i] = requests.post(server.model_url + ":predict", json=bodies[i], timeout=WAIT_S)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers  # type: ignore[return-value]


def _float_instances(exported: Exported) -> list[list]:
    from keras.utils import img_to_array, load_img

    return [
        (img_to_array(load_img(p, target_size=(SIZE, SIZE))) / 255.0).tolist() for p in exported.chips[:4]
    ]


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


def _png(width: int, height: int) -> dict[str, str]:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 60)).save(buffer, format="PNG")
    return _b64(buffer.getvalue())


def test_concurrent_requests_share_one_call_per_signature_and_answer_as_without_batching(
    batching_server: Server, server: Server, exported: Exported
) -> None:
    import tensorflow as tf

    floats = _float_instances(exported)
    files = [path.read_bytes() for path in exported.chips[:4]]
    bodies = [{"instances": [x]} for x in floats] + [
        {"signature_name": SIGNATURE_BYTES, "instances": [_b64(f)]} for f in files
    ]
    logged = len(batching_server.log.read_text())
    answers = _concurrently(batching_server, bodies)
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    batches = sorted((b["signature"], b["rows"], b["requests"]) for b in _batches(batching_server, logged))
    assert batches == [(SIGNATURE_BYTES, "4", "4"), (SIGNATURE_FLOAT, "4", "4")]  # one call each, never mixed

    # The very floats the model gives for these instances called together (four, or any two or
    # more: a row's outputs do not depend on the others), and those of one request holding them
    # to the shared server, which does not batch.
    saved = tf.saved_model.load(str(exported.base_path / "1"))
    expected = {
        SIGNATURE_FLOAT: saved.signatures[SIGNATURE_FLOAT](input_image=tf.constant(floats, tf.float32)),
        SIGNATURE_BYTES: saved.signatures[SIGNATURE_BYTES](image_bytes=tf.constant(files)),
    }
    together = {
        SIGNATURE_FLOAT: server.post(":predict", json={"instances": floats}).json(),
        SIGNATURE_BYTES: server.post(
            ":predict", json={"signature_name": SIGNATURE_BYTES, "instances": [_b64(f) for f in files]}
        ).json(),
    }
    for signature, group in ((SIGNATURE_FLOAT, answers[:4]), (SIGNATURE_BYTES, answers[4:])):
        for i, answer in enumerate(group):
            prediction = answer.json()["predictions"][0]
            assert prediction == together[signature]["predictions"][i]
            for head, values in prediction.items():
                assert np.array_equal(np.float32(values), expected[signature][head].numpy()[i]), (
                    signature,
                    i,
                    head,
                )


def test_the_metrics_page_counts_what_batching_did(batching_server: Server) -> None:
    """The batches the log shows are on the metrics page, as TF Serving's run count and ours."""
    batches = _batches(batching_server, 0)
    assert batches, "no batch ran before this test: run the module, not this test alone"
    page = requests.get(f"http://127.0.0.1:{batching_server.port}/monitoring/prometheus/metrics", timeout=30)
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in page.text.splitlines()
        if line.startswith((":tensorflow:serving:batching_session", ":amazonia:serving:batching_"))
    }
    assert values[":amazonia:serving:batching_batch_count"] == len(batches)
    assert values[":tensorflow:serving:batching_session:wrapped_run_count"] >= len(batches)
    assert values[":amazonia:serving:batching_instance_count"] == sum(int(b["rows"]) for b in batches)


def test_a_lone_request_is_answered_as_in_a_full_batch(batching_server: Server, exported: Exported) -> None:
    floats = _float_instances(exported)
    together = batching_server.post(":predict", json={"instances": floats}).json()["predictions"]
    logged = len(batching_server.log.read_text())
    alone = batching_server.post(":predict", json={"instances": [floats[2]]})  # waits for the timeout
    assert alone.status_code == 200
    assert [(b["rows"], b["requests"]) for b in _batches(batching_server, logged)] == [("1", "1")]
    assert alone.json()["predictions"][0] == together[2]  # to the last bit


def test_a_full_queue_is_503_and_a_request_over_max_batch_size_400(
    batching_server: Server, exported: Exported
) -> None:
    floats = _float_instances(exported)
    too_many = batching_server.post(":predict", json={"instances": floats + floats[:1]})
    assert (too_many.status_code, too_many.json()) == (
        400,
        {
            "error": "Task size 5 is larger than maximum input batch size 4 (max_batch_size in the batching "
            "parameters file); send the instances in several requests"
        },
    )
    waiting: list[requests.Response] = []
    first = threading.Thread(
        target=lambda: waiting.append(batching_server.post(":predict", json={"instances": floats[:3]}))
    )
    first.start()
    time.sleep(QUEUED_S)  # three instances wait for a fourth in the only batch the queue holds
    refused = batching_server.post(":predict", json={"instances": floats[:2]})
    first.join()
    assert (refused.status_code, refused.json()) == (
        503,
        {
            "error": "The batch scheduling queue to which this task was submitted is full; currently 1 "
            "batches enqueued and max_enqueued_batches is 1 (max_enqueued_batches in the batching parameters "
            "file); send it again later"
        },
    )
    assert waiting[0].status_code == 200


def test_a_batch_decodes_at_most_1024x1024_pixels_and_heavier_requests_are_not_batched(
    batching_server: Server, exported: Exported
) -> None:
    def body(*images: dict) -> dict:
        return {"signature_name": SIGNATURE_BYTES, "instances": list(images)}

    large = _png(1024, 768)  # 786,432 pixels: two do not fit one batch
    chip = _b64(exported.chips[0].read_bytes())  # 256 x 256
    logged = len(batching_server.log.read_text())
    waiting: list[requests.Response] = []
    threads = [
        threading.Thread(target=lambda b=b: waiting.append(batching_server.post(":predict", json=b)))
        for b in (body(large), body(chip))
    ]
    for thread in threads:  # the large image, then the chip, join one batch
        thread.start()
        time.sleep(QUEUED_S)
    second_large = batching_server.post(":predict", json=body(large))  # needs a batch of its own: none left
    heavy = batching_server.post(":predict", json=body(_png(1100, 1000)))  # past the batch budget: runs alone
    for thread in threads:
        thread.join()
    assert second_large.status_code == 503, second_large.text
    assert heavy.status_code == 200, heavy.text
    assert [w.status_code for w in waiting] == [200, 200]
    assert [(b["rows"], b["requests"], b["pixels"]) for b in _batches(batching_server, logged)] == [
        ("2", "2", f"{1024 * 768 + 256 * 256:,}")
    ]
