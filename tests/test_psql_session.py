"""A psql session opened by comsa-migrate behaves as psql alone in a terminal: Ctrl-C
cancels what psql is doing, and the session goes on."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .embedded_helpers import embedded_env, embedded_home, server_pid
from .helpers import wait_until

#: runs its arguments as the leader of a new session whose controlling terminal is stdin,
#: as a shell in a terminal runs a command: Ctrl-C there is SIGINT to that whole group
IN_A_TERMINAL = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


class Terminal:
    """A command in a pseudo-terminal of its own, its output read as it comes."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-c", IN_A_TERMINAL, *args],
            stdin=slave, stdout=slave, stderr=slave, env=env,
        )  # fmt: skip
        os.close(slave)
        self.output = b""
        self._reader = threading.Thread(target=self._read, name="test-pty-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the terminal's last user is gone
                return
            if not chunk:
                return
            self.output += chunk

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> None:
        wait_until(
            lambda: self.output.count(text.encode()) >= count,
            timeout,
            f"{text!r} {count} times in {self.output!r}",
        )

    def close(self) -> int:
        try:
            return self.process.wait(30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self._reader.join(10)
            os.close(self.master)


def _ctrl_c_then_a_query(terminal: Terminal) -> int:
    terminal.wait_for("=# ")
    terminal.type("\x03")  # the terminal's Ctrl-C: SIGINT to comsa-migrate and psql
    terminal.wait_for("=# ", count=2)
    terminal.type("SELECT 6 * 7 AS answer;\n")
    terminal.wait_for("42")
    terminal.type("\\q\n")
    return terminal.close()


def test_ctrl_c_in_a_psql_session_goes_to_psql_and_the_session_goes_on(dsn: str) -> None:
    env = {**os.environ, "PSQL_PAGER": "", "PAGER": ""}
    terminal = Terminal([sys.executable, "-m", "comsa_migrate", "psql", "--dsn", dsn], env)

    assert _ctrl_c_then_a_query(terminal) == 0, terminal.output


@pytest.mark.slow
def test_ctrl_c_in_psql_under_embedded_run_goes_on_and_the_server_stops_after(
    tmp_path: Path,
) -> None:
    with embedded_home() as home:
        env = {**embedded_env(home), "PSQL_PAGER": "", "PAGER": ""}
        command = [sys.executable, "-m", "comsa_migrate", "embedded", "run", "psql"]

        assert _ctrl_c_then_a_query(Terminal(command, env)) == 0
        wait_until(lambda: server_pid(home / "pgdata") is None, 10, "the server to stop")
