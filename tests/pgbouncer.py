"""A real PgBouncer in front of the test server, started by a test and stopped after it.

Its [databases] entry forwards every database name to the test server (the host and port
of COMSA_TEST_DSN, or the embedded server's socket folder), and its pools are small (two
server connections per database and user), so that in transaction pooling the clients
of a test really share server connections. PgBouncer refuses to run as root: as root it
is started with ``-u``, as the owner of the server's socket folder or as nobody."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .helpers import wait_until

__all__ = ["PgBouncer", "pgbouncer_path"]


def pgbouncer_path() -> str | None:
    """The pgbouncer program: on PATH, or where Debian installs it."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/sbin")


class PgBouncer:
    """``pgbouncer`` on 127.0.0.1 and a free port, in front of the server of ``admin_dsn``.

    ``pool_mode`` is transaction or session. With ``password``, clients must give it
    (auth_type plain, checked by PgBouncer itself); without, any known user gets in.
    ``dsn(database_dsn)`` is that database's DSN through PgBouncer.
    """

    def __init__(
        self,
        admin_dsn: str,
        workdir: Path,
        *,
        pool_mode: str = "transaction",
        pool_size: int = 2,
        password: str | None = None,
    ) -> None:
        program = pgbouncer_path()
        if program is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
        self._admin = conninfo_to_dict(admin_dsn)
        self._password = password
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        upstream_host = str(self._admin.get("host") or "/var/run/postgresql")
        self._run_as = _run_as(upstream_host)
        # the socket folder is written after PgBouncer changed user: one of its own in /tmp
        self._socket_dir = Path(tempfile.mkdtemp(prefix="comsa-test-pgbouncer-"))
        if self._run_as is not None:
            os.chown(self._socket_dir, self._run_as.pw_uid, self._run_as.pw_gid)
        self.log = workdir / "pgbouncer.log"
        self._process: subprocess.Popen[bytes] | None = None
        for _ in range(3):  # a free port may be taken between the probe and the bind
            self.port = _free_port()
            self._write_config(upstream_host, pool_mode, pool_size)
            if self._start(program):
                return
        shutil.rmtree(self._socket_dir, ignore_errors=True)
        raise RuntimeError(f"pgbouncer did not start: {self.log.read_text()[-2000:]}")

    def dsn(self, database_dsn: str, **changes: Any) -> str:
        """``database_dsn`` through PgBouncer: same database and user, PgBouncer's address."""
        params = conninfo_to_dict(database_dsn)
        params.pop("hostaddr", None)
        params.update(host="127.0.0.1", port=str(self.port), sslmode="disable")
        params.update(changes)
        return make_conninfo(**{k: v for k, v in params.items() if v is not None})

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _write_config(self, upstream_host: str, pool_mode: str, pool_size: int) -> None:
        user = str(self._admin.get("user") or "postgres")
        upstream = {"host": upstream_host, "port": str(self._admin.get("port") or 5432)}
        if self._admin.get("password"):
            upstream["password"] = str(self._admin["password"])
        entry = " ".join(f"{key}={value}" for key, value in upstream.items())
        auth = "auth_type = plain\n" if self._password is not None else "auth_type = trust\n"
        (self.workdir / "users.txt").write_text(f'"{user}" "{self._password or ""}"\n')
        (self.workdir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = {entry}\n"
            "\n[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self._socket_dir}\n"
            f"{auth}"
            f"auth_file = {self.workdir / 'users.txt'}\n"
            f"pool_mode = {pool_mode}\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 200\n"
            "server_login_retry = 1\n"
            # a client left waiting for a server connection fails instead of hanging
            "query_wait_timeout = 10\n"
        )

    def _start(self, program: str) -> bool:
        """Start it and wait until it answers; False if it exited (its port was taken)."""
        command = [program]
        if self._run_as is not None:
            command += ["-u", self._run_as.pw_name]
        command.append(str(self.workdir / "pgbouncer.ini"))
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        process = self._process
        try:
            wait_until(
                lambda: process.poll() is not None or self._answers(),
                15,
                f"pgbouncer to accept connections on port {self.port}",
            )
        except AssertionError:
            self.stop()
            raise
        return process.poll() is None

    def _answers(self) -> bool:
        admin = make_conninfo(**{**self._admin, "password": self._password or None})
        try:
            psycopg.connect(self.dsn(admin), connect_timeout=2, prepare_threshold=None).close()
        except psycopg.OperationalError:
            return False
        return True


def _run_as(upstream_host: str) -> pwd.struct_passwd | None:
    """Who PgBouncer runs as when started by root: the owner of the server's socket folder
    (only it may reach a socket there), else nobody. None: not root, run as this user."""
    if os.geteuid() != 0:
        return None
    if upstream_host.startswith("/"):
        owner = pwd.getpwuid(os.stat(upstream_host).st_uid)
        if owner.pw_uid != 0:
            return owner
    return pwd.getpwnam("nobody")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
