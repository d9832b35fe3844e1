"""The one place that leans on watchdog's inotify internals, to hear what its public API
does not report: a kernel queue overflow, and the loss of the watched folder itself.

Supported: the watchdog versions that ``pyproject.toml`` allows, each tested. When a
later watchdog changes these internals, the daemon still watches through watchdog's
public inotify observer, warns once, and rescans the tree every ``BLIND_RESCAN_S``
seconds, so that no overflow or lost folder goes unnoticed for longer than that.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from watchdog.observers.api import BaseObserver

__all__ = [
    "BLIND_RESCAN_S",
    "SignalEvents",
    "inotify_observer",
    "reader_alive",
    "signals_heard",
    "watches_left",
]

log = logging.getLogger(__name__)

#: how often the daemon rescans when it cannot hear overflows and the loss of the tree
BLIND_RESCAN_S = 60.0
#: inotify events on the watched folder itself that mean it is gone or no longer the tree
_ROOT_GONE_MASK = 0x00000400 | 0x00000800 | 0x00002000  # DELETE_SELF, MOVE_SELF, UNMOUNT
#: the callbacks watchdog's inotify reader may call, as far as this module knows them
_NEEDED_CALLBACKS = frozenset({"on_event", "on_watch_deleted", "on_queue_overflow"})
_KNOWN_CALLBACKS = _NEEDED_CALLBACKS | {"on_events_lost"}


class SignalEvents(Protocol):
    """What the signals are told to; both methods must return quickly, from any thread."""

    def tree_changed(self, reason: str) -> None: ...

    def events_lost(self, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _Internals:
    """watchdog's inotify pieces, once they are known to have the expected shape."""

    inotify_fd: Any
    emitter: Any
    callback_id: Callable[[int], Any]
    constants: Any
    mask: Callable[[int], Any]
    #: the reader calls on_events_lost once every watch is rebuilt after an overflow
    #: (watchdog 7.1.1); before, only on_queue_overflow, in the middle of the rebuild
    loss_after_rebuild: bool


@functools.cache
def _internals() -> _Internals | None:
    """watchdog's internals if they are as this module expects, else None (logged once)."""
    try:
        from watchdog.observers.inotify import InotifyEmitter
        from watchdog.observers.inotify_c import (
            CallbackId,
            InotifyConstants,
            InotifyFD,
            Mask,
            WatchCallback,
        )

        callbacks = {name for name in vars(WatchCallback) if name.startswith("on_")}
        shape_ok = (
            _NEEDED_CALLBACKS <= callbacks <= _KNOWN_CALLBACKS
            and all(
                callable(getattr(InotifyFD, name, None))
                for name in ("add_callback", "start", "stop", "join", "is_alive")
            )
            and "inotify_fd" in inspect.signature(InotifyEmitter.__init__).parameters
        )
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        shape_ok, callbacks = False, {f"({type(exc).__name__}: {exc})"}
    if not shape_ok:
        from watchdog.version import VERSION_STRING

        log.warning(
            "watchdog %s is not a version this daemon knows how to hear inotify queue "
            "overflows and the loss of the tree from (its callbacks: %s); watching "
            "without them, and rescanning every %g s instead",
            VERSION_STRING,
            ", ".join(sorted(callbacks)),
            BLIND_RESCAN_S,
        )
        return None
    return _Internals(
        InotifyFD,
        InotifyEmitter,
        CallbackId,
        InotifyConstants,
        Mask,
        loss_after_rebuild="on_events_lost" in callbacks,
    )


def signals_heard() -> bool:
    """Whether an inotify observer reports overflows and the loss of the tree."""
    return _internals() is not None


def inotify_observer(root: str, events: SignalEvents) -> BaseObserver:
    """An inotify observer for ``root``; it tells ``events`` of overflows and of the loss
    of ``root`` when ``signals_heard()``. Raises OSError when inotify cannot be had."""
    internals = _internals()
    if internals is None:
        from watchdog.observers.inotify import InotifyObserver

        return InotifyObserver(timeout=1.0)
    return _signalling_observer(internals, root, events)


def reader_alive(observer: BaseObserver) -> bool:
    """Whether the observer's own inotify reader thread, if it has one, still runs."""
    reader = getattr(observer, "inotify_fd", None)
    return reader is None or bool(reader.is_alive())


class _RootSentinel:
    """A callback on ``root``'s watch: it hears what watchdog keeps to itself.

    watchdog handles IN_Q_OVERFLOW itself (it rebuilds its watches) and tells every
    callback registered with its inotify instance, but not the event handler. A callback
    this class does not know is taken as a loss of events: a rescan finds what it hides.
    No method raises, since an exception would end watchdog's reader thread.
    """

    def __init__(self, root: str, events: SignalEvents, *, loss_after_rebuild: bool) -> None:
        self._root = root
        self._events = events
        self._loss_after_rebuild = loss_after_rebuild
        self._unknown_logged: set[str] = set()

    def on_event(self, event: Any) -> None:
        if getattr(event, "mask", 0) & _ROOT_GONE_MASK:
            self._tell(self._events.tree_changed, f"{self._root} was removed, moved or unmounted")

    def on_watch_deleted(self, wd: int) -> None:
        pass  # the root's own events (above) say why; other watches are not this callback's

    def on_queue_overflow(self) -> None:
        if not self._loss_after_rebuild:
            self._tell(self._events.events_lost, "inotify queue overflow")

    def on_events_lost(self) -> None:
        self._tell(self._events.events_lost, "inotify queue overflow")

    def __getattr__(self, name: str) -> Callable[..., None]:
        if not name.startswith("on_"):
            raise AttributeError(name)

        def unknown(*args: Any, **kwargs: Any) -> None:
            if name not in self._unknown_logged:
                self._unknown_logged.add(name)
                log.warning("watchdog called an unknown inotify callback %s(); rescanning", name)
            self._tell(self._events.events_lost, f"watchdog's {name}()")

        return unknown

    def _tell(self, method: Callable[[str], None], reason: str) -> None:
        try:
            method(reason)
        except Exception:
            log.exception("could not pass on %r", reason)


def _signalling_observer(internals: _Internals, root: str, events: SignalEvents) -> BaseObserver:
    sentinel = _RootSentinel(root, events, loss_after_rebuild=internals.loss_after_rebuild)
    constants = internals.constants
    # IN_MASK_ADD: share the root's watch with the emitter without narrowing it
    mask = internals.mask(
        constants.IN_MASK_ADD
        | constants.IN_DELETE_SELF
        | constants.IN_MOVE_SELF
        | constants.IN_DONT_FOLLOW
    )

    class SignallingObserver(BaseObserver):
        def __init__(self) -> None:
            self.inotify_fd = internals.inotify_fd()
            self.inotify_fd.start()
            super().__init__(internals.emitter, timeout=1.0, inotify_fd=self.inotify_fd)

        def on_thread_start(self) -> None:
            super().on_thread_start()  # the emitter's watches are in place from here on
            self.inotify_fd.add_callback(
                os.fsencode(root), mask, sentinel, internals.callback_id(id(sentinel))
            )

        def on_thread_stop(self) -> None:
            super().on_thread_stop()
            self.inotify_fd.stop()
            self.inotify_fd.join()

    return SignallingObserver()


def watches_left() -> bool:
    """Whether this user may still add an inotify watch.

    watchdog does not report a watch it could not add for a folder created after
    start-up; a probe on an inotify instance of its own tells when the per-user limit
    (fs.inotify.max_user_watches) is reached.
    """
    import ctypes

    try:
        from watchdog.observers.inotify_c import inotify_add_watch, inotify_init
    except ImportError:  # a watchdog without these: no way to tell, so none is assumed missing
        return True
    fd = inotify_init()
    if fd < 0:
        return True  # no instance to probe with: not a question of watches
    try:
        if inotify_add_watch(fd, b"/", 0x00000400) >= 0:  # IN_DELETE_SELF, on a folder
            return True
        return ctypes.get_errno() != errno.ENOSPC
    finally:
        os.close(fd)
