"""The sync daemon's Prometheus metrics, served as text on 127.0.0.1 by a small HTTP thread."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Metrics", "MetricsServer"]

log = logging.getLogger(__name__)

PREFIX = "comsa_migrate_sync"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Counters the daemon bumps and gauges read when scraped; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.jobs: Counter[str] = Counter()
        self.rescans: Counter[str] = Counter()
        self.errors = 0
        self.conflicts = 0
        self.last_sync: float | None = None  # Unix time of the last commit
        self.last_lag: float | None = None  # seconds from first event to commit
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def job_synced(self, action: str, at: float, lag: float | None) -> None:
        with self._lock:
            self.jobs[action] += 1
            if action == "conflict":
                self.conflicts += 1
            if action != "unchanged":
                self.last_sync = at
            if lag is not None:
                self.last_lag = lag

    def error(self, n: int = 1) -> None:
        with self._lock:
            self.errors += n

    def rescan(self, reason: str) -> None:
        with self._lock:
            self.rescans[reason] += 1

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at scrape time."""
        self._gauges[name] = (help_text, read)

    def render(self) -> str:
        """The Prometheus text exposition format."""
        with self._lock:
            jobs, rescans = dict(self.jobs), dict(self.rescans)
            errors, conflicts = self.errors, self.conflicts
            last_sync, last_lag = self.last_sync, self.last_lag
        out: list[str] = []
        _family(out, "jobs_total", "counter", "Jobs synced, by action.")
        for action in sorted(jobs):
            out.append(f'{PREFIX}_jobs_total{{action="{action}"}} {jobs[action]}')
        _family(out, "errors_total", "counter", "Jobs that could not be written, and errors.")
        out.append(f"{PREFIX}_errors_total {errors}")
        _family(out, "conflicts_total", "counter", "Jobs left alone: changed in the database.")
        out.append(f"{PREFIX}_conflicts_total {conflicts}")
        _family(out, "rescans_total", "counter", "Full rescans of the data folder, by reason.")
        for reason in sorted(rescans):
            out.append(f'{PREFIX}_rescans_total{{reason="{reason}"}} {rescans[reason]}')
        _family(out, "last_sync_timestamp_seconds", "gauge", "Unix time of the last write.")
        out.append(f"{PREFIX}_last_sync_timestamp_seconds {last_sync or 0:.3f}")
        _family(out, "last_lag_seconds", "gauge", "First file event to commit, last job.")
        out.append(f"{PREFIX}_last_lag_seconds {last_lag or 0:.3f}")
        for name, (help_text, read) in sorted(self._gauges.items()):
            _family(out, name, "gauge", help_text)
            out.append(f"{PREFIX}_{name} {_number(read())}")
        return "\n".join(out) + "\n"


class MetricsServer:
    """GET /metrics on 127.0.0.1:port, from a thread of its own."""

    def __init__(self, metrics: Metrics, port: int) -> None:
        handler = _handler_for(metrics)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
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


def _handler_for(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics: " + format, *args)

    return Handler


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {PREFIX}_{name} {help_text}")
    out.append(f"# TYPE {PREFIX}_{name} {kind}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"
