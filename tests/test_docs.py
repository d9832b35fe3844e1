"""The manual stays true: its generated parts are what the code gives, every relative link
resolves, and the front pages stay short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docs import generate

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [
        *(ROOT / name for name in ("README.md", "CONTRIBUTING.md", "BENCHMARKS.md")),
        *(ROOT / "docs").glob("*.md"),
    ]
)

_FENCE = re.compile(r"^(```|~~~)", re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _outside_fences(text: str) -> str:
    """The text without its fenced code blocks, whose brackets are not links."""
    kept, fence = [], None
    for line in text.splitlines():
        marker = re.match(r"^\s*(`{3,}|~{3,})", line)
        if marker:
            if fence is None:
                fence = marker.group(1)
                continue
            if marker.group(1).startswith(fence):
                fence = None
                continue
        if fence is None:
            kept.append(line)
    return "\n".join(kept)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page."""
    seen: dict[str, int] = {}
    found = set()
    for line in _outside_fences(page.read_text()).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page: Path) -> list[str]:
    return [
        target
        for target in _LINK.findall(_outside_fences(page.read_text()))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # https:, mailto:, …
    ]


def test_the_generated_parts_are_what_the_code_gives() -> None:
    stale = [str(path.relative_to(ROOT)) for path in generate.stale()]
    assert stale == [], f"out of date: {', '.join(stale)}; run {generate.REGENERATE}"


def test_the_cli_reference_has_every_command() -> None:
    reference = (ROOT / "docs" / "cli.md").read_text()
    for _, _, ctx in generate.commands(generate.main):
        assert f"$ {ctx.command_path} --help\n" in reference, generate.REGENERATE


def test_the_exit_code_table_has_every_exit_constant() -> None:
    from comsa_migrate import errors

    constants = {name: getattr(errors, name) for name in dir(errors) if name.startswith("EXIT_")}
    assert {(name, value) for name, value, _ in generate._exits()} == set(constants.items())
    assert all(meaning for _, _, meaning in generate._exits())


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no such heading in {file.relative_to(ROOT)}")
    assert broken == []


def test_the_front_pages_stay_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
    assert len((ROOT / "BENCHMARKS.md").read_text().splitlines()) <= 300


def test_the_manual_has_the_cutover_guide_and_its_other_pages() -> None:
    pages = {page.name for page in (ROOT / "docs").glob("*.md")}
    assert "cutover.md" in pages
    assert len(pages) >= 4
