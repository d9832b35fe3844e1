"""`comsa-migrate embedded`: the embedded PostgreSQL's DSN, a program run beside it, where
it keeps its data, and removing that data."""

from __future__ import annotations

import click

from comsa_migrate.cli.logs import log_to_stderr
from comsa_migrate.db.embedded import describe_embedded, pgdata_of, reset_embedded, start_embedded
from comsa_migrate.db.embedded_run import run_with_embedded
from comsa_migrate.errors import EXIT_OK, EXIT_SKIPPED
from comsa_migrate.render.embedded import DSN_NOTE, embedded_paths, reset_done, reset_question

__all__ = ["embedded_group"]


@click.group("embedded")
def embedded_group() -> None:
    """The embedded PostgreSQL, used when no database is configured.

    It keeps its data in $COMSA_MIGRATE_HOME/pgdata (by default
    ~/.local/share/comsa-migrate/pgdata), listens on a Unix socket only, and runs while
    a comsa-migrate command uses it: it stops when the last such command ends. Its
    programs are PostgreSQL 18's own, which an older pg_dump or psql cannot replace.

    \b
    Example:
      comsa-migrate embedded path
      comsa-migrate embedded run -- pg_dump -Fc -f comsa_dashboard.dump
    """


@embedded_group.command("dsn")
def dsn_command() -> None:
    """Print the DSN of the embedded database (comsa_dashboard).

    The server is started if need be, to make sure the database exists; it stops again
    when this command ends, unless another comsa-migrate command still uses it. The DSN
    stays the same from one start to the next, but it only connects while the server
    runs: run the program that needs it with `comsa-migrate embedded run -- PROGRAM`,
    which keeps the server up and hands the DSN over in COMSA_DSN and DATABASE_URL.
    The DSN goes to stdout, a reminder of this to stderr.

    \b
    Example:
      comsa-migrate embedded dsn
      comsa-migrate embedded run -- sh -c 'echo "$DATABASE_URL"'
    """
    log_to_stderr()
    click.echo(start_embedded().dsn)
    click.echo(DSN_NOTE, err=True)


@embedded_group.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
def run_command(program: tuple[str, ...]) -> int:
    """Run PROGRAM with the embedded server running until it ends.

    \b
    PROGRAM runs with:
      PATH         the embedded server's bin folder first: its own pg_dump,
                   pg_restore and psql (PostgreSQL 18)
      PGHOST, PGPORT, PGUSER, PGDATABASE
                   its socket, port, superuser and the database comsa_dashboard
                   (every other PG* variable is left out)
      COMSA_DSN, DATABASE_URL
                   its DSN, for comsa-migrate and for applications

    Ctrl-C, SIGTERM and SIGHUP go to PROGRAM. The exit code is PROGRAM's (128 + N when
    signal N ended it); 127 when it cannot be found or started, 2 when the server
    cannot start. Put `--` before PROGRAM when it takes options.

    \b
    Example:
      comsa-migrate embedded run -- pg_dump -Fc -f comsa_dashboard.dump
      comsa-migrate embedded run -- psql -c "SELECT status, count(*) FROM jobs GROUP BY 1"
      comsa-migrate embedded run -- pg_restore -d comsa_dashboard --clean comsa_dashboard.dump
    """
    log_to_stderr()
    return run_with_embedded(program)


@embedded_group.command("path")
def path_command() -> None:
    """Say where the embedded server keeps its data and programs, and their sizes.

    The data folder is all there is to the embedded database: back it up with
    `embedded run -- pg_dump`, remove it with `embedded reset`. The programs are part of
    the Python environment comsa-migrate is installed in, and go with it. This command
    never starts the server.

    \b
    Example:
      comsa-migrate embedded path
    """
    log_to_stderr()
    click.echo(embedded_paths(describe_embedded()))


@embedded_group.command("reset")
@click.option("-y", "--yes", is_flag=True, help="Do not ask first.")
def reset_command(yes: bool) -> int:
    """Stop the embedded server and remove its data folder, after asking.

    Every job migrated into the embedded database goes with it; the next command that
    uses the embedded server starts over from an empty one. Refused while another
    process uses the server (a sync daemon, an `embedded run`): stop it first.

    Exit codes: 0 removed, or nothing to remove; 1 not confirmed; 2 in use.

    \b
    Example:
      comsa-migrate embedded reset
      comsa-migrate embedded reset --yes
    """
    log_to_stderr()
    pgdata = pgdata_of()
    if not yes and pgdata.is_dir():
        try:
            confirmed = click.confirm(reset_question(pgdata), default=False, err=True)
        except click.Abort:  # no answer to read (stdin closed)
            confirmed = False
        if not confirmed:
            click.echo("comsa-migrate: nothing removed", err=True)
            return EXIT_SKIPPED
    click.echo(reset_done(reset_embedded()))
    return EXIT_OK
