"""Prometheus metrics and ``/healthz`` for a months-long service (``metrics.listen``).

What the daemon counts as it works (files finished by watch and outcome, task runs, batch sizes
and seconds, the time of the last success) lives in a registry of its own; what is read at
scrape time (queue depth by state, model loaded, each watch's observer mode, vision passes) is
collected from the daemon then, so a scrape always sees the journal as it is. ``/healthz`` is
the systemd watchdog's rule over HTTP: 200 while the worker is alive and within
``state.item_timeout`` and every observer runs, else 503 with the reason.

Served by ``httpd.Server``, alone or beside the web page on one address.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .httpd import Handler, Request, Response

class Live(Protocol):
    """What the daemon shows at scrape time."""

    def queue_counts(self) -> dict[str, int]: ...

    def model_loaded(self) -> bool: ...

    def watch_modes(self) -> dict[str, str]: ...

    def vision_passes(self) -> int: ...

    def missed_events(self) -> int: ...

    def model_reachable(self) -> bool: ...

    def unhealthy(self) -> str | None: ...


class _Collector:
    """The scrape-time part: read from the daemon when Prometheus asks."""

    def __init__(self, live: Live):
        self.live = live

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily("smolvlm_watch_queue_files", "Files in the journal by state", labels=["state"])
        try:
            for state, n in self.live.queue_counts().items():
                queue.add_metric([state], n)
        except Exception:  # noqa: BLE001 - a journal that cannot be read now: no queue figures this scrape
            pass
        yield queue
        yield GaugeMetricFamily("smolvlm_watch_model_loaded", "1 when the model is loaded",
                                value=int(self.live.model_loaded()))
        yield GaugeMetricFamily("smolvlm_watch_model_reachable", "0 while the model server is out of reach (the "
                                "queue waits and probes)", value=int(self.live.model_reachable()))
        modes = GaugeMetricFamily("smolvlm_watch_watch_mode", "Each watch's observer: 1 for its current mode "
                                  "(native, polling, unavailable)", labels=["watch", "mode"])
        for watch, mode in self.live.watch_modes().items():
            for m in ("native", "polling", "unavailable"):
                modes.add_metric([watch, m], int(mode == m))
        yield modes
        yield CounterMetricFamily("smolvlm_watch_vision_passes", "Images and videos the vision tower encoded",
                                  value=self.live.vision_passes())
        yield CounterMetricFamily("smolvlm_watch_missed_events", "Files a rescan found that no live event had "
                                  "reported (a deaf observer; after a few the watch moves to polling)",
                                  value=self.live.missed_events())


class Metrics:
    """The daemon's counters, and the scrape-time view of ``live``."""

    def __init__(self, live: Live):
        self.live = live
        self.registry = CollectorRegistry()
        r = self.registry
        self.files = Counter("smolvlm_watch_files", "Files finished, by watch and outcome (done: processed, "
                             "skipped: already current, failed, quarantined, pending: retried later)",
                             ["watch", "outcome"], registry=r)
        self.tasks = Counter("smolvlm_watch_task_runs", "Task results computed, by watch and task",
                             ["watch", "task"], registry=r)
        self.batch_seconds = Histogram("smolvlm_watch_inference_seconds", "Seconds per model batch (vision, "
                                       "prefill and decoding of all its files)", registry=r,
                                       buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900))
        self.batch_size = Histogram("smolvlm_watch_batch_size", "Files per model batch", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.last_success = Gauge("smolvlm_watch_last_success_timestamp_seconds",
                                  "Unix time of the last file processed successfully", registry=r)
        r.register(_Collector(live))
        self._batch: tuple[float, int] | None = None

    def batch_started(self, files: int) -> None:
        self._batch = (time.monotonic(), files)

    def file_finished(self, watch: str, outcome: str, tasks: tuple[str, ...]) -> None:
        """A file's result as recorded in the journal; the first result of a batch ends its clock."""
        if self._batch is not None:
            started, files = self._batch
            self.batch_seconds.observe(time.monotonic() - started)
            self.batch_size.observe(files)
            self._batch = None
        self.files.labels(watch, outcome).inc()
        for task in tasks:
            self.tasks.labels(watch, task).inc()
        if outcome == "done":
            self.last_success.set(time.time())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def routes(metrics: Metrics) -> dict[str, Handler]:
    """/metrics (Prometheus text) and /healthz (200 ok, or 503 and why), for ``httpd.Server``."""

    def scrape(_: Request) -> Response:
        return Response(200, metrics.exposition(), CONTENT_TYPE_LATEST)

    def health(_: Request) -> Response:
        why = metrics.live.unhealthy()
        return Response(503, f"unhealthy: {why}\n".encode()) if why else Response(200, b"ok\n")

    return {"/metrics": scrape, "/healthz": health}
