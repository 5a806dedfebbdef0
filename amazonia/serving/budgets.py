"""What one request may cost, and who decodes first: per-request budgets and the decode scheduler.

Each image is checked against the per-image decode budget before TensorFlow sees it
(:func:`amazonia.data.records.images.check_image`); here a request is bounded as
a whole, so that work per request is bounded too:

* at most ``max_instances`` instances (:func:`check_instances`);
* at most ``max_request_pixels`` decoded pixels, all its images together, counted from
  their headers before anything is decoded (:func:`instance_pixels`);
* model calls of at most :data:`MAX_CALL_INSTANCES` instances and
  :data:`MAX_CALL_PIXELS` decoded pixels (one image past it is a call of its own), so
  that memory is bounded and a large request takes turns (:func:`call_slices`);
* at most ``decode_concurrency`` calls that decode more than :data:`LIGHT_CALL_PIXELS`
  at once, the waiting one with the fewest pixels first (:class:`DecodeScheduler`); calls
  of fewer pixels (a chip, a client's batch of 16) take no turn there: they wait neither
  for the heavy decoding under way nor for the heavy requests that arrived before them.

Budgets are counted per instance, so that a batch of several requests (server-side
batching) is checked by summing the same counts: a batch decodes at most
:data:`MAX_BATCH_PIXELS`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np

from amazonia.data.records import image_headers, images
from amazonia.serving.rest import bad_request

MAX_CALL_INSTANCES = 64
MAX_CALL_PIXELS = images.MAX_DECODED_PIXELS  # one image of the largest size a call decodes at once
# A call decoding this much or less is light: 16 chips of 256 x 256 (amazonia predict's batch),
# tens of milliseconds; it runs beside the heavy decoding instead of waiting for a turn.
LIGHT_CALL_PIXELS = 1024 * 1024
# Decoded pixels of one batch (server-side batching, amazonia.serving.batching): a batch stays
# a light call, so it never waits for a decode turn; a request decoding more is not batched,
# and takes its turns as it does without batching.
MAX_BATCH_PIXELS = LIGHT_CALL_PIXELS


@dataclass(frozen=True)
class RequestLimits:
    """``serve.max_instances`` and ``serve.max_request_pixels``."""

    max_instances: int
    max_request_pixels: int


def batch_size(tensors: Mapping[str, np.ndarray]) -> int | None:
    """The number of instances: the length of every input, or None when the inputs are
    scalars or of different lengths (then the model decides, called once)."""
    sizes = {len(v) if v.ndim else -1 for v in tensors.values()}
    size = sizes.pop() if len(sizes) == 1 else -1
    return size if size >= 0 else None


def check_instances(tensors: Mapping[str, np.ndarray], limits: RequestLimits) -> None:
    """400 for a request of more than ``max_instances`` instances (TF Serving's batching
    words, then ours)."""
    size = batch_size(tensors)
    if size is not None and size > limits.max_instances:
        raise bad_request(
            f"Task size {size} is larger than maximum input batch size {limits.max_instances} "
            "(serve.max_instances); send the instances in several requests"
        )


def instance_pixels(tensors: Mapping[str, np.ndarray], limits: RequestLimits) -> list[int]:
    """Decoded pixels of each instance's images (0 for strings that are no images), after
    checking each image against the per-image budget and their sum against
    ``max_request_pixels`` (400 for either). Headers only: nothing is decoded."""
    size = batch_size(tensors)
    totals = [0] * (size if size is not None else 1)
    for name, array in tensors.items():
        if array.dtype != object:
            continue
        for index, data in np.ndenumerate(array):
            if image_headers.sniff_format(data) is None:
                continue  # no image: a string the model reads otherwise, or refuses itself
            try:
                images.check_image(data)
            except images.BadImageError as err:
                raise bad_request(f"input '{name}': {err}") from None
            totals[index[0] if size is not None and index else 0] += decoded_pixels(data)
    total = sum(totals)
    if total > limits.max_request_pixels:
        raise bad_request(
            f"the images of this request decode to {total:,} pixels, more than this server's limit of "
            f"{limits.max_request_pixels:,} per request (serve.max_request_pixels); send fewer or "
            "smaller images per request"
        )
    return totals


def decoded_pixels(data: object) -> int:
    """Pixels decoding ``data`` materialises, from its header (0 for what is no image the
    header reader knows: the decoder refuses it, or it is cheap)."""
    if not isinstance(data, bytes):
        return 0
    try:
        header = image_headers.read_header(data, images.MAX_GIF_FRAMES)
    except image_headers.HeaderTooLongError:  # refused by check_image before this
        return 0
    return header.decoded_pixels if header is not None else 0


def call_slices(pixels: list[int]) -> list[tuple[int, int, int]]:
    """``(start, stop, pixels)`` of the model calls for instances costing ``pixels``: at most
    MAX_CALL_INSTANCES instances and MAX_CALL_PIXELS pixels each, one instance at least."""
    slices = []
    start, total = 0, 0
    for i, cost in enumerate(pixels):
        if i > start and (i - start >= MAX_CALL_INSTANCES or total + cost > MAX_CALL_PIXELS):
            slices.append((start, i, total))
            start, total = i, 0
        total += cost
    slices.append((start, len(pixels), total))
    return slices


class DecodeScheduler:
    """At most ``slots`` image-decoding model calls at once; a freed slot goes to the
    waiting call with the fewest pixels (the first to ask, among equals).

    Shortest first keeps a chip's latency at about one decoding's length however many
    heavy requests wait; the price is that heavy calls wait while lighter ones keep
    coming. Runs on the server's event loop (not thread-safe).
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @asynccontextmanager
    async def slot(self, pixels: int) -> AsyncIterator[None]:
        """Hold a slot for a call decoding ``pixels``; waits while all are taken."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (pixels, next(self._order), granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release()  # granted as it was cancelled: pass the slot on
                raise
        try:
            yield
        finally:
            self._release()

    @property
    def waiting(self) -> int:
        return sum(not granted.done() for _, _, granted in self._waiting)

    def _release(self) -> None:
        while self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():  # a cancelled waiter is skipped
                granted.set_result(None)
                return
        self._free += 1
