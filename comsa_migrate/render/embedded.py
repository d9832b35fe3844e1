"""The words of `comsa-migrate embedded`: where the embedded server is, and what reset did."""

from __future__ import annotations

from pathlib import Path

from comsa_migrate.db.embedded import EmbeddedState, Reset
from comsa_migrate.db.target import EMBEDDED_DATABASE
from comsa_migrate.render.formatting import human_bytes

__all__ = ["DSN_NOTE", "embedded_paths", "reset_done", "reset_question"]

#: said on stderr beside the DSN: the server does not outlive the command that prints it
DSN_NOTE = (
    "comsa-migrate: the embedded PostgreSQL runs only while a comsa-migrate command uses it: "
    "run the program that needs this DSN with `comsa-migrate embedded run -- PROGRAM`, "
    "which keeps the server up and passes the DSN on in COMSA_DSN and DATABASE_URL"
)
#: what to do with it, below where it is
_HINTS = (
    ("look at it", "comsa-migrate psql"),
    ("dump it", "comsa-migrate embedded run -- pg_dump -Fc -f comsa_dashboard.dump"),
    ("remove it", "comsa-migrate embedded reset (an uninstall leaves the data)"),
)


def embedded_paths(state: EmbeddedState) -> str:
    """Where the data and the programs are, their sizes, and whether the server runs. Paths
    are never wrapped, so that they can be copied whole."""
    if state.data_bytes is None:
        data = "none yet: the first command on the embedded server makes it"
    else:
        version = f", PostgreSQL {state.data_version}" if state.data_version else ""
        data = f"{human_bytes(state.data_bytes)}{version}"
    programs = f"{state.version}, " if state.version else ""
    programs += f"{human_bytes(state.install_bytes)}, in comsa-migrate's Python environment"
    lines = [
        _field("data", str(state.pgdata)),
        _field("", data),
        _field("programs", str(state.bin_dir)),
        _field("", programs),
        _field("server", _server(state)),
        _field("database", EMBEDDED_DATABASE),
        "",
        *(_field(label, text) for label, text in _HINTS),
    ]
    return "\n".join(lines)


def _server(state: EmbeddedState) -> str:
    if state.pid is None:
        return "not running (a command on it starts it, and stops it as it ends)"
    running = f"running, pid {state.pid}"
    if state.socket is not None:
        running += f", socket {state.socket}"
    if not state.users:
        return f"{running}; no live process uses it: the next command on it stops it"
    pids = ", ".join(str(pid) for pid in state.users)
    return f"{running}; used by {'process' if len(state.users) == 1 else 'processes'} {pids}"


def reset_question(pgdata: Path) -> str:
    return f"Stop the embedded PostgreSQL and remove {pgdata}, with every job migrated into it?"


def reset_done(reset: Reset) -> str:
    """What reset did, one line per thing done."""
    if reset.removed_bytes is None:
        return f"nothing to remove: {reset.pgdata} does not exist"
    lines = []
    if reset.stopped_pid is not None:
        lines.append(f"stopped the embedded PostgreSQL (pid {reset.stopped_pid})")
    lines.append(f"removed {reset.pgdata} ({human_bytes(reset.removed_bytes)})")
    return "\n".join(lines)


def _field(label: str, text: str) -> str:
    return f"{label:<11} {text}"
