"""The comsa-migrate command group: its commands, loaded when they run, and their failures
turned into one line and an exit code, here and nowhere else."""

from __future__ import annotations

import importlib
import traceback
from typing import Any

import click
import psycopg

from comsa_migrate.errors import EXIT_BUG, EXIT_OK, EXIT_USAGE, ComsaMigrateError, first_line
from comsa_migrate.version import __version__

__all__ = ["main"]

#: every command and where it lives; a module is imported only when one of its commands
#: runs (or --help lists them): the daemon's pull in watchdog, the report's its planning
_COMMANDS = {
    "backfill": ("comsa_migrate.cli.migrate", "backfill_command"),
    "embedded": ("comsa_migrate.cli.embedded", "embedded_group"),
    "export": ("comsa_migrate.cli.export", "export_command"),
    "gc": ("comsa_migrate.cli.file_store", "gc_command"),
    "init-db": ("comsa_migrate.cli.migrate", "init_db_command"),
    "psql": ("comsa_migrate.cli.migrate", "psql_command"),
    "report": ("comsa_migrate.cli.migrate", "report_command"),
    "restore": ("comsa_migrate.cli.restore", "restore_command"),
    "status": ("comsa_migrate.cli.sync", "status_command"),
    "sync": ("comsa_migrate.cli.sync", "sync_command"),
}
_RIGHTS_HINT = (
    "an owner grants the rights this command needs "
    "with comsa-migrate init-db --grant-writer ROLE or --grant-reader ROLE"
)


class _Commands(click.Group):
    """The command group. A command returns its exit code (None is 0). An expected failure
    is one line on stderr and its exit code; an unexpected error is a bug, shown with its
    traceback and exit 70."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module, name = _COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            code = super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except ComsaMigrateError as exc:
            code = _failed(str(exc), exc.exit_code)
        except psycopg.OperationalError as exc:
            code = _failed(f"the database connection failed: {first_line(exc)}", EXIT_USAGE)
        except psycopg.errors.InsufficientPrivilege as exc:
            # the server's own words name the right ("permission denied for table jobs")
            code = _failed(f"{first_line(exc)} ({_RIGHTS_HINT})", EXIT_USAGE)
        except Exception:
            traceback.print_exc()
            click.echo(
                "comsa-migrate: an unexpected error (a bug in comsa-migrate); "
                "the traceback above helps to report it",
                err=True,
            )
            code = EXIT_BUG
        if code:
            ctx.exit(code)
        return EXIT_OK  # what main() gives back with standalone_mode=False


def _failed(message: str, code: int) -> int:
    click.echo(f"comsa-migrate: error: {message}", err=True)
    return code


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="comsa-migrate")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens, to stderr.")
def main(verbose: bool) -> None:
    """Migrate the COMSA dashboard's legacy job store (backend/data) into PostgreSQL.

    \b
    Start with:
      comsa-migrate backfill path/to/backend/data
    """
    # each command sets up its logging from --verbose: cli.logs.log_to_stderr()
