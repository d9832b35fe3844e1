"""Settings that can never work stop every command at once, in one line and exit 2: the sync
daemon too, which otherwise waits out an outage. Once it has connected, it waits out any
failure to connect again."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from .conftest import dsn_for
from .helpers import job_row, new_job_id, running_daemon, wait_until, write_job_atomically
from .pgbouncer import PgBouncer
from .test_privileges import Roles, as_user

#: where a daemon with impossible settings must have given up
START_UP_LIMIT_S = 10


def _unresolvable(dsn: str, pgbouncer: Callable[..., PgBouncer]) -> str:
    return "postgresql://comsa:hunter2@comsa-test-host.invalid:5432/comsa_dashboard"


def _missing_database(dsn: str, pgbouncer: Callable[..., PgBouncer]) -> str:
    return dsn_for(dsn, f"comsa_test_missing_{uuid.uuid4().hex[:8]}")


def _wrong_password(dsn: str, pgbouncer: Callable[..., PgBouncer]) -> str:
    return pgbouncer(password="the-right-one").dsn(dsn, password="hunter2")


def _ssl_refused(dsn: str, pgbouncer: Callable[..., PgBouncer]) -> str:
    return pgbouncer().dsn(dsn, sslmode="require")  # PgBouncer set up without TLS


@pytest.mark.parametrize(
    ("make_dsn", "reason"),
    [
        (_unresolvable, "failed to resolve host 'comsa-test-host.invalid'"),
        (_missing_database, 'FATAL:  database "comsa_test_missing_'),
        (_wrong_password, "FATAL:  password authentication failed"),
        (_ssl_refused, "server does not support SSL, but SSL was required"),
    ],
    ids=["host does not resolve", "no such database", "wrong password", "SSL not offered"],
)
def test_the_daemon_with_settings_that_never_work_exits_2_in_one_line_within_seconds(
    cli: Any,
    dsn: str,
    data: Path,
    pgbouncer: Callable[..., PgBouncer],
    make_dsn: Callable[[str, Callable[..., PgBouncer]], str],
    reason: str,
) -> None:
    impossible = make_dsn(dsn, pgbouncer)

    started = time.monotonic()
    result = cli("sync", data, "--dsn", impossible)
    elapsed = time.monotonic() - started

    assert result.exit_code == 2, result.output
    assert elapsed < START_UP_LIMIT_S
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("comsa-migrate: error: cannot connect to ")
    assert reason in lines[0]
    assert "hunter2" not in result.output


@pytest.fixture
def roles(admin_dsn: str) -> Iterator[Roles]:
    made = Roles(admin_dsn)
    yield made
    if made.names:
        made.drop_all()


def test_after_its_start_the_daemon_waits_out_a_refused_login_as_an_outage(
    cli: Any, dsn: str, data: Path, roles: Roles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="comsa_migrate.sync")
    writer = roles.create("writer")
    assert cli("init-db", "--dsn", dsn, "--grant-writer", writer).exit_code == 0
    role = sql.Identifier(writer)
    job_id = new_job_id()

    with (
        running_daemon(as_user(dsn, writer), data) as daemon,
        psycopg.connect(dsn, autocommit=True) as admin,
    ):
        admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [writer]
        )
        wait_until(
            lambda: "is not permitted to log in" in caplog.text,
            what="an attempt to connect again, refused",
        )
        write_job_atomically(data, job_id)
        admin.execute(sql.SQL("ALTER ROLE {} LOGIN").format(role))

        wait_until(lambda: job_row(dsn, job_id), what="the job once the role may log in")
        assert daemon.stats()["outages"] == 1


BOGUS_URI = "postgresql://comsa:hunter2@127.0.0.1:5432/comsa_dashboard?bogus=1"
BOGUS_PAIRS = "host=127.0.0.1 password=hunter2 bogus=1"


@pytest.mark.parametrize(
    "command",
    [("backfill", "TREE"), ("report", "TREE"), ("sync", "TREE"), ("status",), ("init-db",)],
    ids=lambda command: command[0],
)
@pytest.mark.parametrize("bogus", [BOGUS_URI, BOGUS_PAIRS], ids=["URI", "key=value"])
def test_an_unknown_dsn_option_is_named_by_every_command_without_the_password(
    cli: Any, sample_tree: Path, command: tuple[str, ...], bogus: str
) -> None:
    args = [str(sample_tree) if arg == "TREE" else arg for arg in command]

    result = cli(*args, "--dsn", bogus)

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        'comsa-migrate: error: --dsn is not a valid connection string: unknown option "bogus" '
        "(see the parameter key words of libpq's documentation)\n"
    )
    assert "hunter2" not in result.output


def test_an_unknown_option_in_comsa_dsn_names_comsa_dsn(cli: Any) -> None:
    result = cli("status", env={"COMSA_DSN": BOGUS_URI})

    assert result.exit_code == 2
    assert 'COMSA_DSN is not a valid connection string: unknown option "bogus"' in result.stderr
