"""What this host says of a process by its id: whether it lives, and when it started.

The one reading of /proc for the daemon's leases (sync/lock.py) and for `status`
(sync/status.py): a zombie (killed, not yet reaped by its parent) is gone.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["exists", "host_scope", "start_ticks"]


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot; None when no live process has it
    (or /proc cannot tell). Raises PermissionError when /proc hides it."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None
    except PermissionError:
        raise
    except OSError:
        return None
    return None if _ended(fields) else int(fields[19])


def exists(pid: int) -> bool:
    """Whether a live process of this id runs on this host (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    try:
        fields = _stat_fields(pid)
    except OSError:  # no /proc here, hidden, or the process ended meanwhile: as kill() said
        return True
    return not _ended(fields)


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the name, which is in parentheses and may hold spaces."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def _ended(fields: list[str]) -> bool:
    """A zombie (killed, not yet reaped by its parent) or a dead task is gone."""
    return fields[0] in ("Z", "X")


def host_scope() -> str | None:
    """What a pid means one process within: this boot of this machine, this pid namespace."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"boot {boot}, pid namespace {namespace}"
