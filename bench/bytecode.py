"""Compile the project's bytecode before measuring, as installing a package does.

pip compiles a package's modules when it installs them, so the command a user runs
imports bytecode. A source checkout installed in editable mode has none until a run
writes it, and none at all where PYTHONDONTWRITEBYTECODE is set: every child process
would then compile comsa_migrate from source, about 40 ms that no installed copy pays.
"""

from __future__ import annotations

import compileall
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compile_project() -> None:
    """Write __pycache__ for comsa_migrate and bench (ignored by git)."""
    for package in ("comsa_migrate", "bench"):
        if not compileall.compile_dir(ROOT / package, quiet=1):
            raise SystemExit(f"could not compile {package}")
