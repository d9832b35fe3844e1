"""Write the parts of the docs that come from the code: the CLI reference, the problem codes
and the exit codes.

    python -m docs.generate          # rewrite them in place
    python -m docs.generate --check  # exit 1, naming the files, when one is out of date

Each generated part sits between two markers in a Markdown file,

    <!-- BEGIN GENERATED: name -->
    ...
    <!-- END GENERATED: name -->

and everything outside the markers is written by hand. A new command, option or code needs
nothing here: run the command above and commit what it changed.
"""

from __future__ import annotations

import io
import re
import sys
import tokenize
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from comsa_migrate.cli import main
from comsa_migrate.problems import CODES

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
ERRORS_PY = ROOT / "comsa_migrate" / "errors.py"
REGENERATE = "python -m docs.generate"

#: the width click wraps --help to on a terminal of 80 columns or more, whatever the terminal
WIDTH = 78


def commands(
    command: click.Command, parent: click.Context | None = None, name: str = "comsa-migrate"
) -> Iterator[tuple[str, click.Command, click.Context]]:
    """Every command and subcommand, depth first, in the order --help lists them."""
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = click.Context(command, info_name=name, parent=parent, **settings)
    yield name, command, ctx
    if isinstance(command, click.Group):
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                yield from commands(sub, ctx, sub_name)


def cli_reference() -> str:
    """Each command's --help, as `comsa-migrate COMMAND --help` prints it at 80 columns."""
    parts = []
    for _, command, ctx in commands(main):
        path = ctx.command_path
        parts.append(f"### `{path}`\n\n```text\n$ {path} --help\n{command.get_help(ctx)}\n```\n")
    index = "\n".join(
        f"- [`{ctx.command_path}`](#{_anchor(ctx.command_path)}): "
        f"{command.get_short_help_str(limit=200)}"
        for _, command, ctx in commands(main)
    )
    return index + "\n\n" + "\n".join(parts)


def _anchor(command_path: str) -> str:
    """GitHub's anchor of a heading `` `comsa-migrate embedded run` ``."""
    return re.sub(r"[^a-z0-9 -]", "", command_path.lower()).replace(" ", "-")


def problem_codes() -> str:
    """The table of problems.CODES, in its order."""
    rows = ["| code | severity | meaning |", "|---|---|---|"]
    rows += [
        f"| `{code}` | {severity} | {_cell(meaning)} |"
        for code, (severity, meaning) in CODES.items()
    ]
    return "\n".join(rows)


def exit_codes() -> str:
    """The table of the EXIT_ constants of errors.py, with the comment each one carries."""
    rows = ["| code | name | meaning |", "|---:|---|---|"]
    rows += [f"| {value} | `{name}` | {_cell(meaning)} |" for name, value, meaning in _exits()]
    return "\n".join(rows)


def _exits() -> list[tuple[str, int, str]]:
    """(name, value, comment) of each `EXIT_X = N  # comment` in errors.py; a comment goes on
    in the comment-only lines right below it."""
    found: list[tuple[str, int, str]] = []
    source = ERRORS_PY.read_text()
    assignment = re.compile(r"^(EXIT_[A-Z_]+) = (\d+)\s*$")
    pending: list[str] | None = None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            line = token.line.rstrip("\n")
            code, _, _ = line.partition("#")
            match = assignment.match(code)
            text = token.string.lstrip("#").strip()
            if match:
                pending = [text]
                found.append((match.group(1), int(match.group(2)), ""))
            elif pending is not None and not code.strip():
                pending.append(text)
            else:
                pending = None
            if pending is not None and found:
                name, value, _ = found[-1]
                found[-1] = (name, value, " ".join(pending))
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            pending = None
    return sorted(found, key=lambda exit: exit[1])


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a | would end the cell, and <id> would vanish as HTML."""
    return text.replace("|", "\\|").replace("<", "\\<").replace(">", "\\>")


#: file (relative to docs/) -> {part name -> what it holds}
PARTS: dict[str, dict[str, Callable[[], str]]] = {
    "cli.md": {"exit-codes": exit_codes, "cli-reference": cli_reference},
    "mapping.md": {"problem-codes": problem_codes},
}

_PART = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.S,
)


def render(path: Path, parts: dict[str, Callable[[], str]]) -> str:
    """The file's text with each generated part made anew."""
    text = path.read_text()
    seen = set()

    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in parts:
            raise SystemExit(f"{path}: unknown generated part {name!r}")
        seen.add(name)
        return f"{match.group(1)}{parts[name]().rstrip()}\n{match.group(4)}"

    text = _PART.sub(fill, text)
    missing = set(parts) - seen
    if missing:
        raise SystemExit(f"{path}: no markers for {', '.join(sorted(missing))}")
    return text


def stale() -> list[Path]:
    """The files whose generated parts differ from what the code gives now."""
    return [
        DOCS / name
        for name, parts in PARTS.items()
        if render(DOCS / name, parts) != (DOCS / name).read_text()
    ]


def main_(argv: list[str]) -> int:
    if argv == ["--check"]:
        out_of_date = stale()
        for path in out_of_date:
            print(f"{path.relative_to(ROOT)} is out of date: run {REGENERATE}", file=sys.stderr)
        return 1 if out_of_date else 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    for name, parts in PARTS.items():
        path = DOCS / name
        text = render(path, parts)
        if text != path.read_text():
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main_(sys.argv[1:]))
