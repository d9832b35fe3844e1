"""The watchdog side of the sync daemon: file events under DATA_DIR, mapped to job ids."""

from __future__ import annotations

import errno
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Protocol

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MOVED,
    EVENT_TYPE_OPENED,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from comsa_migrate.core.layout import (
    JOBS,
    OUTPUTS,
    UPLOADS,
    is_ignored_name,
    is_job_id,
    job_id_of_json,
)
from comsa_migrate.errors import ComsaMigrateError
from comsa_migrate.sync.inotify_signals import inotify_observer, reader_alive, watches_left

__all__ = [
    "JobEvents",
    "JobEventHandler",
    "WatchBudget",
    "WatchError",
    "explain_os_error",
    "observer_alive",
    "start_observer",
]

log = logging.getLogger(__name__)

_IGNORED_EVENTS = (EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE)
#: what the daemon listens to. Opening, reading and closing files are left out (a write
#: already shows as a modification), and so is "folder modified", which watchdog adds to
#: every change: the kernel then does not even report them, which matters in a burst,
#: and when the daemon reads the files it syncs.
WATCHED_EVENTS = (
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
)


class WatchError(ComsaMigrateError):
    """The file-system observer cannot watch DATA_DIR."""


class JobEvents(Protocol):
    """What the daemon hears from the observer; each method must return quickly."""

    def job_changed(self, job_id: str) -> None: ...

    def job_json_removed(self, job_id: str) -> None: ...

    def json_named_in_other_case(self, job_id: str) -> None: ...

    def tree_changed(self, reason: str) -> None: ...

    def events_lost(self, reason: str) -> None: ...

    def folder_created(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Target:
    kind: str  # "json", "files" or "top"
    job_id: str | None
    other_case: bool = False  # a job JSON not named exactly "<id>.json"


def classify(root: str, path: str) -> _Target | None:
    """What a path under the data folder is to the job store, or None if nothing."""
    if path == root:
        return _Target("top", None)
    if not path.startswith(root + os.sep):
        return None
    parts = path[len(root) + 1 :].split(os.sep)
    top = parts[0]
    if len(parts) == 1:
        return _Target("top", None) if top in (JOBS, UPLOADS, OUTPUTS) else None
    if top == JOBS:
        if len(parts) != 2 or is_ignored_name(parts[1]):
            return None
        job_id = job_id_of_json(parts[1])
        if job_id is None:
            return None
        return _Target("json", job_id, other_case=parts[1] != f"{job_id}.json")
    if top in (UPLOADS, OUTPUTS) and is_job_id(parts[1]):
        if any(is_ignored_name(part) for part in parts[2:]):
            return None
        return _Target("files", parts[1].lower())
    return None


class JobEventHandler(FileSystemEventHandler):
    """Maps every event to the job it concerns and tells ``events`` about it."""

    def __init__(self, root: str, events: JobEvents) -> None:
        super().__init__()
        self.root = root
        self.events = events

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED_EVENTS:
            return
        if event.is_directory and event.event_type == "modified":
            return  # every change in a folder also modifies the folder; the change itself counts
        try:
            src = os.fsdecode(event.src_path)
            if event.is_directory and event.event_type in (EVENT_TYPE_CREATED, EVENT_TYPE_MOVED):
                self.events.folder_created()  # a watch was needed for it
            if event.event_type == EVENT_TYPE_MOVED:
                self._note(src, removed=True)
                self._note(os.fsdecode(event.dest_path), removed=False)
            else:
                self._note(src, removed=event.event_type == EVENT_TYPE_DELETED)
        except Exception:  # an exception here would kill the observer thread
            log.exception("could not handle the file event %r", event)
            self.events.events_lost("event handler error")

    def _note(self, path: str, *, removed: bool) -> None:
        if not path:
            return
        target = classify(self.root, path)
        if target is None:
            return
        if target.kind == "top":
            if removed:
                self.events.tree_changed(f"{path} was removed or moved away")
        elif target.job_id is not None:
            if target.other_case:
                self.events.json_named_in_other_case(target.job_id)
            if target.kind == "json" and removed:
                self.events.job_json_removed(target.job_id)
            # after a removal too: another JSON of the job, in another case, may be left
            self.events.job_changed(target.job_id)


def start_observer(root: str, handler: JobEventHandler, *, polling: bool) -> BaseObserver:
    """Watch ``root`` recursively; started, with the watches in place when this returns."""
    observer: BaseObserver
    if polling:
        from watchdog.observers.polling import PollingObserver

        observer = PollingObserver(timeout=1.0)
    else:
        try:
            observer = inotify_observer(root, handler.events)
        except OSError as exc:
            raise WatchError(f"cannot watch {root}: {explain_os_error(exc)}") from None
    try:
        observer.schedule(handler, root, recursive=True, event_filter=list(WATCHED_EVENTS))
        observer.start()
    except OSError as exc:
        _stop(observer)
        raise WatchError(f"cannot watch {root}: {explain_os_error(exc)}") from None
    except RecursionError:  # watchdog walks the tree with a recursive os.walk() (Python 3.11)
        _stop(observer)
        raise WatchError(
            f"cannot watch {root}: a folder in it is nested deeper than the file watcher can "
            f"walk (about {sys.getrecursionlimit() - 50} levels here); backfill and report "
            "still read it"
        ) from None
    return observer


def stop_observer(observer: BaseObserver | None) -> None:
    if observer is not None:
        _stop(observer)


def observer_alive(observer: BaseObserver | None) -> bool:
    """The observer thread and every emitter thread are running."""
    if observer is None or not observer.is_alive():
        return False
    return reader_alive(observer) and all(emitter.is_alive() for emitter in observer.emitters)


class WatchBudget:
    """Notices that folders created since the last look found no inotify watch left."""

    def __init__(self, polling: bool) -> None:
        self.polling = polling
        self._created = False
        self._logged_at = -math.inf

    def folder_created(self) -> None:
        self._created = True

    def exhausted(self, now: float) -> bool:
        if not self._created or self.polling:
            return False
        self._created = False
        if watches_left():
            return False
        if now >= self._logged_at + 600:
            self._logged_at = now
            reason = explain_os_error(OSError(errno.ENOSPC, "no inotify watch left"))
            log.error("%s: new folders may go unwatched; rescanning every minute", reason)
        return True


def explain_os_error(exc: OSError) -> str:
    """The reason, naming the kernel limit to raise when inotify runs out of watches."""
    if exc.errno == errno.ENOSPC:
        return (
            "inotify ran out of watches (one is needed per folder): raise the "
            "fs.inotify.max_user_watches limit, e.g. "
            "`sysctl fs.inotify.max_user_watches=524288`, or use --polling"
        )
    if exc.errno == errno.EMFILE:
        return (
            "too many inotify instances: raise the fs.inotify.max_user_instances limit, "
            "or use --polling"
        )
    return exc.strerror or str(exc)


def _stop(observer: BaseObserver) -> None:
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=5)
    except Exception:  # stopping a half-started observer must not hide the original error
        log.debug("stopping the observer failed", exc_info=True)
