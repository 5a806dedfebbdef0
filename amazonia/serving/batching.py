"""Server-side batching as TF Serving does it: concurrent requests for one signature share model calls.

TF Serving's ``--enable_batching`` puts a ``BatchingSession`` in front of each servable, whose
``SharedBatchScheduler`` queues requests and runs them in batches on a pool of
``num_batch_threads`` threads (``tensorflow_serving/batching/batching_session.cc``,
``tensorflow/core/kernels/batching_util/shared_batch_scheduler.h``). :class:`BatchScheduler`
does the same on the server's event loop, with TF Serving's rules:

* a queue per signature of a loaded version (and per input shape past the batch
  dimension): requests for different models, versions or signatures never share a call;
* a queue is a row of batches, the last one open: a request joins the open batch if it
  fits (``max_batch_size`` instances), else starts a new one, unless
  ``max_enqueued_batches`` are waiting already: then it is refused, 503
  ``UNAVAILABLE``, in TF Serving's words;
* a request of more than ``max_batch_size`` instances is refused (400, ``Task size N is
  larger than maximum input batch size M``), or, with ``enable_large_batch_splitting``,
  split over batches of ``max_execution_batch_size``;
* a batch runs once a batch thread is free and it is closed (a newer batch exists), full,
  or ``batch_timeout_micros`` old; the queues take turns for the threads;
* a batch is padded up to the next of ``allowed_batch_sizes`` with its last request's
  first instance, and the padding's outputs dropped.

And with this server's budgets and guarantees:

* a batch decodes at most :data:`amazonia.serving.budgets.MAX_BATCH_PIXELS` (it stays a
  light call, so it never waits for a decode turn), and runs as model calls of at most
  :data:`amazonia.serving.budgets.MAX_CALL_INSTANCES` instances; a request decoding more
  is not batched (the server runs it on its own, in turns, as without batching);
* a model call never holds a single instance: a lone one is called twice over, its copy's
  outputs dropped. oneDNN computes a dense layer for one row with another kernel (matrix
  by vector) than for several, and the outputs differ in float32's last bit; for two rows
  or more they do not depend on the other rows or their order (measured for this
  project's model, docs/serving.md), so an answer is the same whatever requests it shared
  a call with, and whether the server was idle or loaded;
* a batch the model refuses (bytes that are no image, ...) is run again request by
  request, so that only the request at fault is refused (TF Serving fails the batch);
* a request cancelled while it waits (the server shutting down) leaves its batch.

Each batch is logged at INFO (``amazonia serve -v``) with its size, and counted in
:class:`BatchingStats` for the metrics endpoint.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from amazonia.serving import budgets
from amazonia.serving.batching_parameters import BatchingParameters
from amazonia.serving.rest import RestError, bad_request

log = logging.getLogger(__name__)

SERVICE_UNAVAILABLE = 503
MIN_CALL_INSTANCES = 2  # see the module docstring: a row's outputs do not depend on its call

ModelCall = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
Outputs = dict[str, np.ndarray]


@dataclass
class BatchingStats:
    """What batching has done since the server started (TF Serving's metric in brackets)."""

    batches: int = 0
    model_calls: int = 0  # (/tensorflow/serving/batching_session/wrapped_run_count)
    instances: int = 0  # in batches, padding excluded (processed_batch_size, summed)
    padding: int = 0  # instances added to reach an allowed batch size (padding_size, summed)
    requests: int = 0  # requests (or parts of split ones) batched
    queue_full: int = 0  # requests refused 503
    queuing_seconds: float = 0.0  # from a batch's first request to its run (queuing_latency, summed)


class _Request:
    """One request's instances and the future its handler awaits; a split request
    finishes when its last part does."""

    def __init__(
        self, tensors: Mapping[str, np.ndarray], pixels: Sequence[int], future: asyncio.Future
    ) -> None:
        self.tensors = tensors
        self.pixels = pixels
        self.future = future
        self.parts_left = 0
        self._outputs: dict[int, Mapping[str, np.ndarray]] = {}

    @property
    def rows(self) -> int:
        return len(self.pixels)

    def finish_part(self, start: int, outputs: Mapping[str, np.ndarray]) -> None:
        if self.future.done():  # cancelled, or another part failed
            return
        self._outputs[start] = outputs
        self.parts_left -= 1
        if self.parts_left == 0:
            parts = [self._outputs[s] for s in sorted(self._outputs)]
            if len(parts) == 1:
                self.future.set_result(dict(parts[0]))
            else:
                self.future.set_result({name: np.concatenate([p[name] for p in parts]) for name in parts[0]})

    def fail(self, err: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(err)


@dataclass(frozen=True)
class _Part:
    """Instances ``start:stop`` of a request (all of them unless it was split)."""

    request: _Request
    start: int
    stop: int
    pixels: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def tensors(self) -> Mapping[str, np.ndarray]:
        if self.start == 0 and self.stop == self.request.rows:
            return self.request.tensors
        return {name: array[self.start : self.stop] for name, array in self.request.tensors.items()}


class _Batch:
    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.rows = 0
        self.pixels = 0
        self.opened = 0.0  # loop time of its first part

    def add(self, part: _Part, now: float) -> None:
        if not self.parts:
            self.opened = now
        self.parts.append(part)
        self.rows += part.rows
        self.pixels += part.pixels


class _Queue:
    """The batches of one signature, TF Serving's ``internal::Queue``: never empty, the
    last batch open."""

    def __init__(self, key: Hashable, label: str, call: ModelCall, parameters: BatchingParameters) -> None:
        self.key = key
        self.label = label
        self.call = call
        self.parameters = parameters
        self.batches: collections.deque[_Batch] = collections.deque([_Batch()])
        self.running = 0

    @property
    def idle(self) -> bool:
        return self.running == 0 and len(self.batches) == 1 and not self.batches[0].parts

    def schedule(self, request: _Request, now: float) -> None:
        """Put ``request`` in the open batch, or new ones; 503 if that takes more batches
        than ``max_enqueued_batches`` (TF Serving's ``ValidateBatchTaskQueueCapacity``)."""
        plan = self._plan(request)
        new_batches = sum(new for new, *_ in plan)
        if len(self.batches) + new_batches > self.parameters.max_enqueued_batches:
            raise RestError(SERVICE_UNAVAILABLE, self._full_message(request))
        request.parts_left = len(plan)
        for new, start, stop, pixels in plan:
            if new:
                self.batches.append(_Batch())
            self.batches[-1].add(_Part(request, start, stop, pixels), now)

    def _plan(self, request: _Request) -> list[tuple[bool, int, int, int]]:
        """``(starts a new batch, start, stop, pixels)`` of each part ``request`` goes in."""
        limit = self.parameters.batch_size_limit
        open_batch = self.batches[-1]
        if not self.parameters.enable_large_batch_splitting:
            pixels = sum(request.pixels)
            fits = (
                open_batch.rows + request.rows <= limit
                and open_batch.pixels + pixels <= budgets.MAX_BATCH_PIXELS
            )
            return [(bool(open_batch.parts) and not fits, 0, request.rows, pixels)]
        plan = []
        rows_left, pixels_left = limit - open_batch.rows, budgets.MAX_BATCH_PIXELS - open_batch.pixels
        start, new = 0, False
        while start < request.rows:
            stop, pixels = start, 0
            while (
                stop < request.rows
                and stop - start < rows_left
                and pixels + request.pixels[stop] <= pixels_left
            ):
                pixels += request.pixels[stop]
                stop += 1
            if stop == start:
                if rows_left < limit or pixels_left < budgets.MAX_BATCH_PIXELS:  # full: start a new batch
                    rows_left, pixels_left, new = limit, budgets.MAX_BATCH_PIXELS, True
                    continue
                stop, pixels = start + 1, request.pixels[start]  # one instance past the budget, alone
            plan.append((new, start, stop, pixels))
            rows_left, pixels_left, new = rows_left - (stop - start), pixels_left - pixels, False
            start = stop
        return plan

    def _full_message(self, request: _Request) -> str:
        parameters = self.parameters
        hint = "(max_enqueued_batches in the batching parameters file); send it again later"
        if not parameters.enable_large_batch_splitting:
            return (
                "The batch scheduling queue to which this task was submitted is full; currently "
                f"{len(self.batches)} batches enqueued and max_enqueued_batches is "
                f"{parameters.max_enqueued_batches} {hint}"
            )
        limit = parameters.batch_size_limit
        capacity = (
            (parameters.max_enqueued_batches - len(self.batches)) * limit + limit - self.batches[-1].rows
        )
        return (
            "The batch scheduling queue to which this task was submitted is full; task size is "
            f"{request.rows} but scheduling capacity is only {max(capacity, 0)} (num_enqueued_batches="
            f"{len(self.batches)}, max_enqueued_batches={parameters.max_enqueued_batches}, open_batch_size="
            f"{self.batches[-1].rows}, max_execution_batch_size={limit}) {hint}"
        )

    def deadline(self) -> float | None:
        """When the open batch times out, if it is the only one and holds requests."""
        if len(self.batches) == 1 and self.batches[0].parts:
            return self.batches[0].opened + self.parameters.batch_timeout_micros / 1e6
        return None

    def pop_ready(self, now: float) -> _Batch | None:
        """The first batch if it may run now: closed, full or timed out (TF Serving's
        ``ScheduleBatch``); None otherwise."""
        if len(self.batches) == 1:
            deadline = self.deadline()
            if deadline is None or (
                self.batches[0].rows < self.parameters.batch_size_limit and now < deadline
            ):
                return None
            self.batches.append(_Batch())
        return self.batches.popleft()


class BatchScheduler:
    """TF Serving's ``SharedBatchScheduler`` for ``amazonia serve``: queues of requests, run
    in batches, ``num_batch_threads`` at a time. Runs on the server's event loop (not
    thread-safe); the model calls run in a pool of its own."""

    def __init__(self, parameters: BatchingParameters) -> None:
        self.parameters = parameters
        self.stats = BatchingStats()
        self._queues: dict[Hashable, _Queue] = {}
        self._turn = 0  # the queue whose batch runs next, among those ready
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._threads = concurrent.futures.ThreadPoolExecutor(
            parameters.num_batch_threads, thread_name_prefix=parameters.thread_pool_name
        )

    def check_size(self, rows: int) -> None:
        """400 for a request of more instances than ``max_batch_size`` (TF Serving's words),
        whether it is batched or not; a request is never split past that."""
        if rows > self.parameters.max_batch_size:
            raise bad_request(
                f"Task size {rows} is larger than maximum input batch size {self.parameters.max_batch_size} "
                "(max_batch_size in the batching parameters file); send the instances in several requests"
            )

    async def run(
        self,
        key: Hashable,
        label: str,
        call: ModelCall,
        tensors: Mapping[str, np.ndarray],
        pixels: Sequence[int],
    ) -> Outputs:
        """The outputs of ``call`` for ``tensors`` (instances decoding ``pixels`` each), called
        in batches with the other requests of the same ``key``; ``label`` names the queue in
        logs. 400 for too many instances, 503 if the queue is full."""
        self.check_size(len(pixels))
        loop = asyncio.get_running_loop()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(key, label, call, self.parameters)
        request = _Request(tensors, pixels, loop.create_future())
        try:
            queue.schedule(request, loop.time())
        except RestError:
            self.stats.queue_full += 1
            if queue.idle:
                del self._queues[key]
            raise
        self._dispatch()
        return await request.future

    def close(self) -> None:
        """Stop the batch threads once the batches running end (at server shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
        self._threads.shutdown(wait=False)

    def _dispatch(self, not_before: float = 0.0) -> None:
        """Start batches that may run while batch threads are free, then wake up when the
        next open batch times out."""
        loop = asyncio.get_running_loop()
        now = max(loop.time(), not_before)  # a timer may fire a hair before its time
        while self._running < self.parameters.num_batch_threads:
            picked = self._next_batch(now)
            if picked is None:
                break
            queue, batch = picked
            self._running += 1
            queue.running += 1
            task = loop.create_task(self._process(queue, batch, now))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running < self.parameters.num_batch_threads:
            deadlines = [d for q in self._queues.values() if (d := q.deadline()) is not None]
            if deadlines:
                when = min(deadlines)
                self._timer = loop.call_at(when, self._dispatch, when)

    def _next_batch(self, now: float) -> tuple[_Queue, _Batch] | None:
        queues = list(self._queues.values())
        for i in range(len(queues)):
            queue = queues[(self._turn + i) % len(queues)]
            batch = queue.pop_ready(now)
            if batch is not None:
                self._turn = (self._turn + i + 1) % len(queues)
                return queue, batch
        return None

    async def _process(self, queue: _Queue, batch: _Batch, started: float) -> None:
        parts = [part for part in batch.parts if not part.request.future.done()]
        try:
            if parts:
                began = time.perf_counter()
                results, calls = await asyncio.get_running_loop().run_in_executor(
                    self._threads, run_batch, queue.call, parts, self.parameters.allowed_batch_sizes
                )
                self._record(queue, parts, calls, started - batch.opened, time.perf_counter() - began)
                for part, result in zip(parts, results, strict=True):
                    if isinstance(result, RestError):
                        part.request.fail(RestError(result.status, result.message))
                    else:
                        part.request.finish_part(part.start, result)
        except Exception as err:  # a fault of the server: each request of the batch answers 500
            for part in parts:
                part.request.fail(err)
        finally:
            self._running -= 1
            queue.running -= 1
            if queue.idle and self._queues.get(queue.key) is queue:
                del self._queues[queue.key]
            self._dispatch()

    def _record(self, queue: _Queue, parts: list[_Part], calls: int, waited_s: float, ran_s: float) -> None:
        rows = sum(part.rows for part in parts)
        padded = padded_size(rows, self.parameters.allowed_batch_sizes) - rows
        stats = self.stats
        stats.batches += 1
        stats.model_calls += calls
        stats.instances += rows
        stats.padding += padded
        stats.requests += len(parts)
        stats.queuing_seconds += waited_s
        log.info(
            "%s: batch of %s from %s (%s decoded pixels%s): waited %.1f ms, ran %.1f ms in %s",
            queue.label,
            _count(rows, "instance"),
            _count(len(parts), "request"),
            f"{sum(part.pixels for part in parts):,}",
            f", padded with {padded}" if padded else "",
            waited_s * 1000,
            ran_s * 1000,
            _count(calls, "model call"),
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def padded_size(rows: int, allowed_batch_sizes: Sequence[int]) -> int:
    """``rows`` rounded up to the next allowed batch size (TF Serving's
    ``RoundToLowestAllowedBatchSize``); ``rows`` when none is set or none is larger."""
    return next((size for size in allowed_batch_sizes if size >= rows), rows)


def run_batch(
    call: ModelCall, parts: Sequence[_Part], allowed_batch_sizes: Sequence[int]
) -> tuple[list[Outputs | RestError], int]:
    """Each part's outputs (or the 400 the model answered for it) from one batch, and the
    number of model calls made; blocking, run in a batch thread.

    The parts' inputs are joined, padded to an allowed batch size with the last part's
    first instance, and called in slices (:func:`call_instances`). If the model refuses
    the batch and it holds several requests, each is run again alone.
    """
    rows = sum(part.rows for part in parts)
    names = list(parts[0].tensors())
    inputs = {name: np.concatenate([part.tensors()[name] for part in parts]) for name in names}
    pixels = [cost for part in parts for cost in part.request.pixels[part.start : part.stop]]
    padding = padded_size(rows, allowed_batch_sizes) - rows
    if padding:
        first = rows - parts[-1].rows
        inputs = {
            name: np.concatenate([array, np.repeat(array[first : first + 1], padding, 0)])
            for name, array in inputs.items()
        }
        pixels += [pixels[first]] * padding
    try:
        outputs, calls = call_instances(call, inputs, pixels)
    except RestError as err:
        if len({id(part.request) for part in parts}) == 1:
            return [err] * len(parts), 1
        results: list[Outputs | RestError] = []
        calls = 1
        for part in parts:
            try:
                part_outputs, part_calls = call_instances(
                    call, part.tensors(), part.request.pixels[part.start : part.stop]
                )
                results.append(part_outputs)
            except RestError as part_err:
                part_calls = 1
                results.append(part_err)
            calls += part_calls
        return results, calls
    results, offset = [], 0
    for part in parts:
        results.append({name: array[offset : offset + part.rows] for name, array in outputs.items()})
        offset += part.rows
    return results, calls


def call_instances(
    call: ModelCall, inputs: Mapping[str, np.ndarray], pixels: Sequence[int]
) -> tuple[Outputs, int]:
    """``call``'s outputs for ``inputs`` (instances decoding ``pixels`` each), called in
    slices within the per-call budgets (:func:`amazonia.serving.budgets.call_slices`), none
    of a single instance; and the number of calls."""
    parts = []
    slices = budgets.call_slices(list(pixels))
    for start, stop, _ in slices:
        sliced = {name: array[start:stop] for name, array in inputs.items()}
        alone = stop - start < MIN_CALL_INSTANCES
        if alone:
            sliced = {name: np.repeat(array, MIN_CALL_INSTANCES, 0) for name, array in sliced.items()}
        outputs = call(sliced)
        parts.append({name: array[: stop - start] for name, array in outputs.items()} if alone else outputs)
    if len(parts) == 1:
        return dict(parts[0]), 1
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}, len(parts)
