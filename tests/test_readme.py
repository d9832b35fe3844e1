"""The README stays true: its quick start names real files, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_quick_start_backfills_a_fixture_that_exists() -> None:
    text = README.read_text()
    match = re.search(r"comsa-migrate backfill (fixtures/\S+)", text)
    assert match is not None
    assert (README.parent / match.group(1) / "jobs").is_dir()


def test_ci_runs_the_readmes_test_command() -> None:
    """.ci/run runs the suite as the README tells people to, on both servers."""
    command = re.compile(r"\.venv/bin/python -m pytest\b(.*)$", re.M)
    readme = {args.strip() for args in command.findall(README.read_text())}
    ci = [args.strip() for args in command.findall((README.parent / ".ci" / "run").read_text())]

    whole_suite = [args for args in ci if "tests/" not in args]
    named_files = [path for args in ci for path in re.findall(r"tests/\S+", args)]

    assert len(readme) == 1, readme
    assert whole_suite == [*readme] * 2
    assert all((README.parent / path).is_file() for path in named_files)  # extra runs of a part
