"""The comsa-migrate command line: click only, options in, one library call, exit code out."""

from __future__ import annotations

from comsa_migrate.cli.group import main

__all__ = ["main"]
