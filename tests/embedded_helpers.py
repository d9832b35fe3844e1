"""What the tests of the embedded server share: a home for it, the environment of a command
that uses it, and its server seen from outside (postmaster.pid, the handle list)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

from comsa_migrate.db.embedded import reset_embedded
from comsa_migrate.db.embedded_users import HANDLES_FILE
from comsa_migrate.errors import EmbeddedInUse


@contextlib.contextmanager
def embedded_home() -> Iterator[Path]:
    """A COMSA_MIGRATE_HOME of its own, its server stopped and its folder removed after.

    It is not under pytest's base folder: started by root, the server runs as the user
    embedded_postgres, which must be able to reach its data folder, and every pytest
    session that starts (another worker, another run) makes that base folder root's alone.
    """
    base = Path(tempfile.mkdtemp(prefix="comsa-embedded-"))
    base.chmod(0o755)
    try:
        yield base / "home"
    finally:
        with contextlib.suppress(EmbeddedInUse):
            reset_embedded(base / "home")
        shutil.rmtree(base, ignore_errors=True)


def embedded_env(home: Path) -> dict[str, str]:
    """The environment of a command with no database configured, on the server in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "COMSA_"))}
    env.pop("DATABASE_URL", None)
    env["COMSA_MIGRATE_HOME"] = str(home)
    return env


def server_pid(pgdata: Path) -> int | None:
    """The pid of the server in ``pgdata`` while its process lives (starting, ready or
    stopping), else None."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return None
    except (OSError, ValueError, psutil.NoSuchProcess):
        return None
    return pid


def ready_dsn(pgdata: Path) -> str | None:
    """The comsa_dashboard DSN of the server in ``pgdata`` once it is ready: its socket
    folder and port are lines 5 and 4 of postmaster.pid, its status line 8."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 8 or lines[7].strip() != "ready" or server_pid(pgdata) is None:
        return None
    return f"postgresql://postgres@/comsa_dashboard?host={lines[4]}&port={lines[3]}"


def handles(pgdata: Path) -> list[int]:
    """The pids in the server's handle list; none while there is no list."""
    try:
        return list(json.loads((pgdata / HANDLES_FILE).read_text()))
    except (OSError, ValueError):
        return []
