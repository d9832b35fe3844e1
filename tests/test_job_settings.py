"""Each job's transaction runs with the tool's own limits and synchronous_commit off,
whatever the session's defaults, whether the limits travel in a statement of their own
(the session's statement timeout differs from the tool's) or inside the job's apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from comsa_migrate import BackfillOptions, WriteOptions, backfill
from comsa_migrate.db.faults import Limits

NAMES = (
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "synchronous_commit",
    "transaction_isolation",
)
#: a trigger that notes, for each job inserted, the settings its transaction runs with
SPY = f"""
CREATE TABLE seen (id uuid, {", ".join(f"{name} text" for name in NAMES)});
CREATE FUNCTION note_settings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seen VALUES (NEW.id, {", ".join(f"current_setting('{n}')" for n in NAMES)});
    RETURN NULL;
END $$;
CREATE TRIGGER note_settings AFTER INSERT ON public.jobs
    FOR EACH ROW EXECUTE FUNCTION note_settings();
"""


@pytest.mark.parametrize(
    ("session", "limits", "expected"),
    [
        # the session's statement timeout is the tool's: the apply sets the rest itself
        (
            "-c lock_timeout=7ms -c synchronous_commit=on"
            " -c idle_in_transaction_session_timeout=9s",
            Limits(),
            ("0", "0", "0", "off", "read committed"),
        ),
        # the session's differs: a statement sets it, with the others, before the apply
        (
            "-c statement_timeout=40s -c lock_timeout=7ms",
            Limits(),
            ("0", "0", "0", "off", "read committed"),
        ),
        (
            "-c default_transaction_isolation=serializable",
            Limits("30s", "2s"),
            ("30s", "2s", "0", "off", "read committed"),
        ),
    ],
    ids=["in-the-apply", "statement-before", "tool-limits"],
)
def test_every_job_runs_with_the_tools_settings(
    dsn: str, sample_tree: Path, session: str, limits: Limits, expected: tuple[str, ...]
) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SPY)
    with psycopg.connect(dsn, autocommit=True, options=session) as conn:
        summary = backfill(conn, BackfillOptions(sample_tree, WriteOptions(limits=limits)))
        assert summary.ok
        seen: list[Any] = conn.execute(f"SELECT {', '.join(NAMES)} FROM seen").fetchall()
        jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()
    assert jobs is not None and len(seen) == jobs[0] > 0
    assert set(seen) == {expected}
