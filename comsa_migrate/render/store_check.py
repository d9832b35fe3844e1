"""The report's file store section, in text, Markdown and JSON (render/report.py uses these)."""

from __future__ import annotations

from typing import Any

from comsa_migrate.file_store.gc import Garbage
from comsa_migrate.problems import CODES
from comsa_migrate.render.formatting import counted, field, human_bytes, number, wrap
from comsa_migrate.report.result import STORE_FINDINGS, StoreCheck

__all__ = ["gc_text", "store_json", "store_markdown", "store_text"]

EXAMPLES = 10


def _size_text(check: StoreCheck) -> str:
    text = f"{check.url}: {counted(check.contents, 'content')}, {human_bytes(check.bytes)}"
    text += f"; {counted(check.files, 'file')} recorded"
    if check.not_on_disk:
        text += f" ({number(check.not_on_disk)} no longer on disk, their last content kept)"
    if check.unnamed:
        text += (
            f"; {counted(check.unnamed, 'content')} ({human_bytes(check.unnamed_bytes)}) "
            "named by no file (gc removes them)"
        )
    return text + f"; {number(check.verified)} read back and verified"


def store_text(check: StoreCheck, *, show_all: bool = False) -> list[str]:
    lines = [field("file store", _size_text(check))]
    counts = check.counts
    for kind in STORE_FINDINGS:
        if not counts[kind]:
            continue
        lines += wrap(f"{kind} ({number(counts[kind])}): {CODES[kind][1]}", "  ", "      ")
        found = [f for f in check.findings if f.kind == kind]
        shown = found if show_all else found[:EXAMPLES]
        lines += [f"    - {f.path}" for f in shown]
        if len(shown) < len(found):
            lines.append(f"    … and {number(len(found) - len(shown))} more (--all lists them)")
    return lines


def store_markdown(check: StoreCheck) -> list[str]:
    lines = ["", "### File store", "", _size_text(check).replace("|", "\\|")]
    counts = check.counts
    for kind in STORE_FINDINGS:
        if counts[kind]:
            lines.append(f"- **`{kind}`** ({number(counts[kind])}): {CODES[kind][1]}")
    return lines


def store_json(check: StoreCheck | None) -> dict[str, Any] | None:
    if check is None:
        return None
    return {
        "url": check.url,
        "contents": check.contents,
        "bytes": check.bytes,
        "files": check.files,
        "not_on_disk": check.not_on_disk,
        "unnamed_contents": check.unnamed,
        "unnamed_bytes": check.unnamed_bytes,
        "verified": check.verified,
        "by_finding": {kind: check.counts[kind] for kind in STORE_FINDINGS},
        "findings": [
            {
                "finding": f.kind,
                "severity": str(f.severity),
                "job_id": f.job_id,
                "path": f.path,
                "sha256": f.sha256,
            }
            for f in check.findings
        ],
    }


def gc_text(garbage: Garbage) -> str:
    """What `gc` found, and did (or would do without --yes)."""
    held = f"{counted(garbage.contents, 'content')}, {human_bytes(garbage.bytes)}"
    unnamed = f"{counted(garbage.unnamed, 'content')} ({human_bytes(garbage.unnamed_bytes)})"
    lines = [f"File store {garbage.url}: {held}"]
    if not garbage.unnamed:
        lines.append("Nothing to delete: every content old enough is named by a stored file.")
    elif garbage.deleted:
        lines.append(f"Deleted {unnamed} that no stored file named.")
    else:
        lines.append(f"Would delete {unnamed} that no stored file names; --yes deletes them.")
    return "\n".join(lines)
