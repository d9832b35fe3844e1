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
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except PermissionError:
        raise
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def exists(pid: int) -> bool:
    """Whether a live process of this id runs on this host (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    if not os.path.isdir("/proc/self"):  # no /proc here: as kill() said
        return True
    try:
        return start_ticks(pid) is not None
    except PermissionError:  # hidden from us, but kill() found it
        return True


def host_scope() -> str | None:
    """What a pid means one process within: this boot of this machine, this pid namespace."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"boot {boot}, pid namespace {namespace}"
