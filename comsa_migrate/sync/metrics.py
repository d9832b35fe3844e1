"""The sync daemon's Prometheus metrics: a collector that reads its SyncStats when scraped,
served on 127.0.0.1 from a registry of its own by a small HTTP thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from comsa_migrate.sync.stats import SyncStats

__all__ = ["Gauge", "MetricsServer", "StatsCollector", "daemon_gauges"]

log = logging.getLogger(__name__)

PREFIX = "comsa_migrate_sync"


@dataclass(frozen=True, slots=True)
class Gauge:
    """A gauge of the daemon's state, read when scraped (from the HTTP thread)."""

    name: str  # after PREFIX_
    documentation: str
    read: Callable[[], float]


def daemon_gauges(
    queue_depth: Callable[[], float],
    observer_up: Callable[[], float],
    database_up: Callable[[], float],
    tree_present: Callable[[], float],
) -> tuple[Gauge, ...]:
    """The gauges of the daemon's state, each read from the function given."""
    return (
        Gauge("queue_depth", "Jobs waiting to be synced.", queue_depth),
        Gauge("observer_up", "1 while the file observer runs.", observer_up),
        Gauge("database_up", "1 while connected.", database_up),
        Gauge("tree_present", "0 while most of the tree is gone.", tree_present),
    )


class StatsCollector(Collector):
    """The daemon's counters from one snapshot of its SyncStats, then its gauges.

    Counters are yielded without a ``_created`` sample: the daemon's start is when they
    all began, and a scraper sees a restart as their reset.
    """

    def __init__(self, stats: SyncStats, gauges: Sequence[Gauge] = ()) -> None:
        self._stats = stats
        self._gauges = sorted(gauges, key=lambda gauge: gauge.name)

    def collect(self) -> Iterator[Metric]:
        snap = self._stats.snapshot()
        yield _by_label("jobs", "Jobs synced, by action.", "action", snap.actions)
        yield CounterMetricFamily(
            f"{PREFIX}_errors",
            "Jobs that could not be written, and errors.",
            value=snap.counters["errors"],
        )
        yield CounterMetricFamily(
            f"{PREFIX}_conflicts",
            "Jobs left alone: changed in the database.",
            value=snap.actions.get("conflict", 0),
        )
        yield _by_label(
            "rescans", "Full rescans of the data folder, by reason.", "reason", snap.rescans
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_last_sync_timestamp_seconds",
            "Unix time of the last write.",
            value=snap.last_write_at or 0.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_last_lag_seconds",
            "First file event to commit, last job.",
            value=snap.last_lag_s or 0.0,
        )
        for gauge in self._gauges:
            yield GaugeMetricFamily(
                f"{PREFIX}_{gauge.name}", gauge.documentation, value=float(gauge.read())
            )


def _by_label(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=[label])
    for value in sorted(counts):
        family.add_metric([value], counts[value])
    return family


class MetricsServer:
    """GET /metrics (or /) on 127.0.0.1:port, from a thread of its own; port 0 picks one.

    Raises OSError when the port cannot be had.
    """

    def __init__(self, collector: Collector, port: int) -> None:
        registry = CollectorRegistry()  # not the global one: only the daemon's own metrics
        registry.register(collector)
        self._server = make_server(
            "127.0.0.1",
            port,
            _metrics_only(make_wsgi_app(registry)),
            ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="comsa-migrate-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://127.0.0.1:%d/metrics", self.port)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def _metrics_only(app: WSGIApplication) -> WSGIApplication:
    """prometheus_client's app answers every path; the daemon answers /metrics and / only."""

    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"404 Not Found: the metrics are on /metrics\n"]
        return app(environ, start_response)

    return serve


class _QuietHandler(WSGIRequestHandler):
    """Each request at DEBUG through logging, rather than a line on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: " + format, *args)
