"""Rules of the package's layout that no behaviour shows: small modules, exit codes only
from the command group, loggers named after their modules, and the layers of its rooms."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "comsa_migrate"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_is_over_400_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 400


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_nothing_in_the_package_calls_sys_exit(path: Path) -> None:
    calls = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr == "exit"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert calls == [], "commands return their exit code; the group alone exits"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_the_package_names_its_loggers_after_their_modules(path: Path) -> None:
    own = [
        node.args[0].value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "getLogger"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and str(node.args[0].value).startswith("comsa_migrate")
    ]
    assert own == [], "use logging.getLogger(__name__)"


def test_the_rooms_import_each_other_only_as_the_import_linter_contracts_say() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [os.fspath(lint_imports), "--no-cache"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
