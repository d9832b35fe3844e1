"""A program run beside the embedded PostgreSQL: the server's own programs first on PATH,
libpq's variables and a DSN set, and the server running until the program ends."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

from psycopg.conninfo import conninfo_to_dict

from comsa_migrate.db.embedded import start_embedded
from comsa_migrate.db.target import Target, embedded_bin_dir
from comsa_migrate.errors import ProgramNotRun

__all__ = ["DSN_VARIABLES", "embedded_environment", "run_program", "run_with_embedded"]

#: the variables that carry the embedded DSN to the program: comsa-migrate's own (so that a
#: comsa-migrate run inside writes there too) and the usual one of applications
DSN_VARIABLES = ("COMSA_DSN", "DATABASE_URL")
#: libpq's variables set from the DSN; every other PG* variable is left out
_LIBPQ = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE"}


def run_with_embedded(
    argv: Sequence[str], home: Path | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """Run ``argv`` with the embedded server up (started if need be) and its environment
    (see embedded_environment), as run_program does."""
    if not argv:
        raise ProgramNotRun("no program to run")
    path = f"{embedded_bin_dir()}{os.pathsep}{(environ or os.environ).get('PATH', os.defpath)}"
    program = shutil.which(argv[0], path=path)
    if program is None:
        raise ProgramNotRun(
            f"{argv[0]}: no such program (looked in the embedded server's bin folder, then PATH)"
        )
    env = embedded_environment(start_embedded(home), environ)
    return run_program([program, *argv[1:]], env)


def run_program(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` (its program found already) until it ends; its exit code, 128 + N when
    signal N ended it. This process stays until the program ends, so that a server it holds
    runs as long: SIGTERM and SIGHUP go to the program, and so does SIGINT unless it came
    from the terminal, which sends Ctrl-C to the program too (psql goes on after one)."""
    try:
        child = subprocess.Popen(list(argv), env=env)
    except OSError as exc:
        raise ProgramNotRun(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    with _signals_passed_on(child):
        code = child.wait()
    return 128 - code if code < 0 else code


def embedded_environment(
    target: Target, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``environ`` (by default this process's) for a program that uses ``target``, the
    embedded server: its bin folder first on PATH; PGHOST, PGPORT, PGUSER and PGDATABASE
    set from the DSN and no other PG* variable (PGHOSTADDR or PGSERVICE would win over
    them); the DSN itself in COMSA_DSN and DATABASE_URL."""
    source = os.environ if environ is None else environ
    env = {key: value for key, value in source.items() if not key.startswith("PG")}
    env["PATH"] = f"{embedded_bin_dir()}{os.pathsep}{source.get('PATH', os.defpath)}"
    params = conninfo_to_dict(target.dsn)
    env.update({var: str(params[key]) for key, var in _LIBPQ.items() if params.get(key)})
    env.update(dict.fromkeys(DSN_VARIABLES, target.dsn))
    return env


@contextlib.contextmanager
def _signals_passed_on(child: subprocess.Popen[bytes]) -> Iterator[None]:
    """This process stays until ``child`` ends, so that the server stops after it; the
    signals meant to end both go to the child, which decides."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; the caller's own stay in place
        return

    def pass_on(signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGINT or not _terminal_sent_it_too():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    names = ("SIGINT", "SIGTERM", "SIGHUP")
    numbers = [getattr(signal, name) for name in names if hasattr(signal, name)]
    saved = {signum: signal.signal(signum, pass_on) for signum in numbers}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _terminal_sent_it_too() -> bool:
    """Whether this process is in the terminal's foreground group: Ctrl-C reached the child
    (in the same group) as well."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, AttributeError, ValueError):
        return False
