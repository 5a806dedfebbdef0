"""Prometheus metrics with TF Serving's names, for ``GET /monitoring/prometheus/metrics``.

TF Serving serves its metrics at that path once a monitoring config enables them
(``--monitoring_config_file`` with ``prometheus_config { enable: true }``); ``amazonia
serve`` always does, on its REST port: the page holds no path or secret, and costs
nothing unread. Where TF Serving has a metric, it has its name, labels, units and
buckets, written as TF Serving's exporter writes them (``/tensorflow/serving/request_count``
is ``:tensorflow:serving:request_count``, a counter without the ``_total`` that
prometheus-client would add, latencies in microseconds in buckets of 10 * 1.8^i), so a
dashboard or alert made for TF Serving reads this page unchanged:

* ``:tensorflow:serving:request_count{model_name, status}``: ``:predict`` requests by
  canonical status (``OK``, ``INVALID_ARGUMENT``, ``NOT_FOUND``, ...);
* ``:tensorflow:serving:request_latency{model_name, API, entrypoint}``: successful
  ``:predict`` requests (``API="Predict"``, ``entrypoint="REST"``), from the request
  line to the answer;
* ``:tensorflow:cc:saved_model:load_attempt_count{model_path, status}``: version loads,
  ``success`` or ``fail``, warmup included; ``model_path`` is ``<model>/<version>``
  (TF Serving's is the folder's path, which this server never shows);
* ``:tensorflow:cc:saved_model:load_latency{model_path}``: microseconds spent in
  successful loads;
* ``:tensorflow:serving:model_warmup_latency{model_path, status}``: warmup replays.

TF Serving has no metric for the rest, which are amazonia's (``:amazonia:serving:``):

* ``request_count{model_name, version, signature_name, status}`` and
  ``request_latency{model_name, version, signature_name}``: the same requests by the
  version and signature that answered them (a canary against stable);
* ``warmup_request_count{model_name, version}``: warmup requests replayed;
* ``model_version_state{model_name, version, state}``: 1 for each version the server
  knows, in its state (``LOADING``, ``AVAILABLE``, ``END``);
* ``model_version_label{model_name, label, version}``: 1 for each version label;
* with server-side batching on, ``batching_batch_count``, ``batching_instance_count``,
  ``batching_padding_count``, ``batching_request_count``, ``batching_queue_full_count`` and
  ``batching_queuing_seconds``: running totals of what it did (the mean batch size is
  instances over batches); its model calls are TF Serving's
  ``:tensorflow:serving:batching_session:wrapped_run_count``.

What a client chooses cannot grow the page: a request naming no served model counts
under ``model_name=""`` (TF Serving uses the name as sent), and its version and
signature are ``""`` until known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's PrometheusExporter::kPrometheusPath
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# TF Serving's latency buckets (monitoring::Buckets::Exponential(10, 1.8, 33)), in
# microseconds, to the six digits its exporter writes (10, 18, 32.4, ... 1.47476e+09).
LATENCY_BUCKETS_US = tuple(float(f"{10 * 1.8**i:.6g}") for i in range(33))
PREDICT_API, REST_ENTRYPOINT = "Predict", "REST"
LOAD_SUCCESS, LOAD_FAIL = "success", "fail"  # TF's kLoadAttemptSuccess, kLoadAttemptFail
NO_LABEL = ""  # a model, version or signature that is not (yet) known
# The canonical code TF Serving answers with each HTTP status (ToHTTPStatusCode, reversed),
# and ours for the limits TF Serving lacks.
STATUS_CODES = {
    200: "OK",
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
CANCELLED = "CANCELLED"  # a request cut off by shutdown


@dataclass(frozen=True)
class VersionState:
    """A version the server knows of, for ``model_version_state``."""

    model_name: str
    version: int
    state: str


@dataclass(frozen=True)
class VersionLabel:
    """A version label, for ``model_version_label``."""

    model_name: str
    label: str
    version: int


class ServingMetrics:
    """The server's metrics, in a registry of their own; recording is thread-safe and
    costs a few microseconds (prometheus-client's counters and histograms)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._request_count = Counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.",
            ["model_name", "status"],
            registry=registry,
        )
        self._request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"],
            buckets=LATENCY_BUCKETS_US,
            registry=registry,
        )
        self._load_attempts = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ["model_path", "status"],
            registry=registry,
        )
        self._load_latency = Counter(
            ":tensorflow:cc:saved_model:load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ["model_path"],
            registry=registry,
        )
        self._warmup_latency = Histogram(
            ":tensorflow:serving:model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ["model_path", "status"],
            buckets=LATENCY_BUCKETS_US,
            registry=registry,
        )
        self._version_requests = Counter(
            ":amazonia:serving:request_count",
            "Predict requests by the version and signature that answered them.",
            ["model_name", "version", "signature_name", "status"],
            registry=registry,
        )
        self._version_latency = Histogram(
            ":amazonia:serving:request_latency",
            "Distribution of wall time (in microseconds) of successful predict requests, by version and "
            "signature.",
            ["model_name", "version", "signature_name"],
            buckets=LATENCY_BUCKETS_US,
            registry=registry,
        )
        self._warmup_requests = Counter(
            ":amazonia:serving:warmup_request_count",
            "Warmup requests replayed before a version answered.",
            ["model_name", "version"],
            registry=registry,
        )

    def record_predict(
        self,
        model_name: str,
        version: int | None,
        signature_name: str | None,
        http_status: int | None,
        seconds: float,
    ) -> None:
        """One ``:predict`` request: ``model_name`` served (else ``""``), the version and
        signature that answered (None if it did not get that far), its HTTP status (None:
        cut off by shutdown), and its wall time."""
        status = CANCELLED if http_status is None else STATUS_CODES.get(http_status, f"HTTP_{http_status}")
        version_label = NO_LABEL if version is None else str(version)
        signature = signature_name or NO_LABEL
        self._request_count.labels(model_name, status).inc()
        self._version_requests.labels(model_name, version_label, signature, status).inc()
        if status == "OK":  # TF Serving times successful requests only
            micros = seconds * 1e6
            self._request_latency.labels(model_name, PREDICT_API, REST_ENTRYPOINT).observe(micros)
            self._version_latency.labels(model_name, version_label, signature).observe(micros)

    def record_load(
        self, model_name: str, version: int, seconds: float, succeeded: bool, warmup: WarmupRun | None = None
    ) -> None:
        """One attempt to load a version, and its warmup replay if it got that far."""
        model_path = f"{model_name}/{version}"
        self._load_attempts.labels(model_path, LOAD_SUCCESS if succeeded else LOAD_FAIL).inc()
        if succeeded:
            self._load_latency.labels(model_path).inc(seconds * 1e6)
        if warmup is not None:
            self._warmup_latency.labels(model_path, warmup.status).observe(warmup.seconds * 1e6)
            self._warmup_requests.labels(model_name, str(version)).inc(warmup.requests)

    def watch(
        self,
        states: Callable[[], Iterable[VersionState]],
        labels: Callable[[], Iterable[VersionLabel]],
    ) -> None:
        """Read the versions' states and the version labels from these at every scrape."""
        self.registry.register(_ModelStates(states, labels))

    def watch_batching(self, stats: Callable[[], Any]) -> None:
        """Read server-side batching's running totals (a ``batching.BatchingStats``) from
        ``stats`` at every scrape."""
        self.registry.register(_BatchingTotals(stats))

    def exposition(self) -> bytes:
        """The metrics page in Prometheus' text format (0.0.4), as TF Serving writes it."""
        lines: list[str] = []
        for family in self.registry.collect():
            help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
            lines.append(f"# HELP {family.name} {help_text}")
            lines.append(f"# TYPE {family.name} {family.type}")
            lines.extend(_sample_lines(family))
        return ("\n".join(lines) + "\n").encode("utf-8")


@dataclass(frozen=True)
class WarmupRun:
    """A version's warmup replay: TF Serving's status string, its requests and its time."""

    status: str  # "OK" or the canonical error code
    requests: int
    seconds: float


class _ModelStates:
    """A prometheus-client collector of what the model manager knows at scrape time."""

    def __init__(
        self, states: Callable[[], Iterable[VersionState]], labels: Callable[[], Iterable[VersionLabel]]
    ) -> None:
        self._states = states
        self._labels = labels

    def collect(self) -> Iterable[Metric]:
        states = GaugeMetricFamily(
            ":amazonia:serving:model_version_state",
            "1 for each version the server knows, labelled with its state.",
            labels=["model_name", "version", "state"],
        )
        for entry in self._states():
            states.add_metric([entry.model_name, str(entry.version), entry.state], 1)
        labels = GaugeMetricFamily(
            ":amazonia:serving:model_version_label",
            "1 for each version label, labelled with the version it names.",
            labels=["model_name", "label", "version"],
        )
        for entry in self._labels():
            labels.add_metric([entry.model_name, entry.label, str(entry.version)], 1)
        return [states, labels]


class _BatchingTotals:
    """A prometheus-client collector of server-side batching's totals at scrape time."""

    # (metric name, help, BatchingStats attribute)
    _COUNTERS = (
        (
            ":tensorflow:serving:batching_session:wrapped_run_count",
            "Tracks the number of batches run by the batching session.",
            "model_calls",
        ),
        (":amazonia:serving:batching_batch_count", "Batches formed.", "batches"),
        (":amazonia:serving:batching_instance_count", "Instances in batches, padding excluded.", "instances"),
        (":amazonia:serving:batching_padding_count", "Instances added to reach an allowed size.", "padding"),
        (":amazonia:serving:batching_request_count", "Requests (or parts of them) batched.", "requests"),
        (":amazonia:serving:batching_queue_full_count", "Requests refused: queue full.", "queue_full"),
        (
            ":amazonia:serving:batching_queuing_seconds",
            "Seconds from each batch's first request to its run, summed.",
            "queuing_seconds",
        ),
    )

    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        stats = self._stats()
        for name, help_text, attribute in self._COUNTERS:
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], getattr(stats, attribute))
            yield family


def _sample_lines(family: Metric) -> Iterable[str]:
    for sample in family.samples:
        if sample.name.endswith("_created"):  # prometheus-client's own; TF Serving has none
            continue
        # TF Serving's counters have no _total suffix.
        name = family.name if family.type == "counter" else sample.name
        labels = ",".join(
            f'{key}="{_escape(_bucket_bound(value) if key == "le" else value)}"'
            for key, value in sample.labels.items()
        )
        yield f"{name}{{{labels}}} {_number(sample.value)}" if labels else f"{name} {_number(sample.value)}"


def _bucket_bound(text: str) -> str:
    """A histogram bound as TF Serving writes it: ``10``, ``32.4``, ``1.47476e+09``, ``+Inf``."""
    bound = float(text)
    return "+Inf" if math.isinf(bound) else f"{bound:.6g}"


def _number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value)) if math.isfinite(value) else ("NaN" if math.isnan(value) else "+Inf")


def _escape(text: str) -> str:
    """A label value escaped as the text format asks."""
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
