"""The adapter over watchdog's inotify internals, on a real folder with real inotify.

CI runs this file a second time with the oldest watchdog that pyproject.toml allows
(COMSA_EXPECT_WATCHDOG names the version that run must have)."""

from __future__ import annotations

import logging
import os
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from watchdog.events import FileSystemEventHandler
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, WatchCallback
from watchdog.version import VERSION_STRING

from comsa_migrate.sync import inotify_signals
from comsa_migrate.sync.inotify_signals import inotify_observer, signals_heard

from .helpers import wait_until

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


class Heard:
    """What the adapter passed on, for the test to wait on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []

    def tree_changed(self, reason: str) -> None:
        with self.lock:
            self.calls.append(("tree_changed", reason))

    def events_lost(self, reason: str) -> None:
        with self.lock:
            self.calls.append(("events_lost", reason))

    def of(self, kind: str) -> list[str]:
        with self.lock:
            return [reason for k, reason in self.calls if k == kind]


class Created(FileSystemEventHandler):
    def __init__(self) -> None:
        self.paths: list[str] = []

    def on_created(self, event: Any) -> None:
        self.paths.append(os.fsdecode(event.src_path))


@pytest.fixture(autouse=True)
def fresh_probe() -> Iterator[None]:
    inotify_signals._internals.cache_clear()
    yield
    inotify_signals._internals.cache_clear()


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, Heard, Created, Any]]:
    root = tmp_path / "data"
    root.mkdir()
    heard, created = Heard(), Created()
    observer = inotify_observer(str(root), heard)
    observer.schedule(created, str(root), recursive=True)
    observer.start()
    try:
        yield root, heard, created, observer
    finally:
        observer.stop()
        observer.join(timeout=5)


def test_the_installed_watchdog_is_within_the_supported_range() -> None:
    requirements = [
        Requirement(r) for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    ]
    watchdog = next(r for r in requirements if r.name == "watchdog")

    assert VERSION_STRING in watchdog.specifier
    assert not list(watchdog.specifier.filter(["7.2", "8.0"])), (
        "the range must be capped at what is tested"
    )
    expected = os.environ.get("COMSA_EXPECT_WATCHDOG")
    if expected:  # the CI run with the oldest supported version
        assert expected == VERSION_STRING


def test_the_supported_watchdog_internals_are_understood(caplog: pytest.LogCaptureFixture) -> None:
    assert signals_heard()
    assert "rescanning every" not in caplog.text


def test_an_overflow_is_passed_on_once_after_the_watches_are_rebuilt(
    watched: tuple[Path, Heard, Created, Any],
) -> None:
    root, heard, created, observer = watched
    overflow = InotifyEvent(-1, InotifyConstants.IN_Q_OVERFLOW, 0, b"")

    observer.inotify_fd.handle_event(overflow)  # as the reader thread gets it from read()

    assert heard.of("events_lost") == ["inotify queue overflow"]
    (root / "after").mkdir()  # the watches still work
    wait_until(lambda: str(root / "after") in created.paths, what="the event after the overflow")


def test_the_removal_of_the_watched_folder_is_passed_on(
    watched: tuple[Path, Heard, Created, Any],
) -> None:
    root, heard, _, _ = watched

    root.rmdir()

    wait_until(lambda: heard.of("tree_changed"), what="the removal")
    assert heard.of("tree_changed")[0] == f"{root} was removed, moved or unmounted"


def test_a_callback_the_adapter_does_not_know_counts_as_lost_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard = Heard()
    sentinel = inotify_signals._RootSentinel("/srv/data", heard, loss_after_rebuild=True)

    sentinel.on_watches_reshuffled()  # type: ignore[attr-defined]
    sentinel.on_watches_reshuffled(1, flag=True)  # type: ignore[attr-defined]

    assert heard.of("events_lost") == ["watchdog's on_watches_reshuffled()"] * 2
    assert caplog.text.count("unknown inotify callback on_watches_reshuffled") == 1
    with pytest.raises(AttributeError):
        sentinel.not_a_callback  # type: ignore[attr-defined]  # noqa: B018


def test_an_error_while_passing_a_signal_on_does_not_reach_watchdog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Heard):
        def events_lost(self, reason: str) -> None:
            raise RuntimeError("a bug")

    sentinel = inotify_signals._RootSentinel("/srv/data", Broken(), loss_after_rebuild=True)

    sentinel.on_events_lost()

    assert "could not pass on 'inotify queue overflow'" in caplog.text


def test_changed_internals_fall_back_to_the_public_observer_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Simulated: a later watchdog whose reader has a callback this adapter does not know."""
    monkeypatch.setattr(WatchCallback, "on_watches_reshuffled", lambda self: None, raising=False)
    created = Created()

    with caplog.at_level(logging.WARNING):
        assert not signals_heard()
        observer = inotify_observer(str(tmp_path), Heard())
        assert not signals_heard()
    observer.schedule(created, str(tmp_path), recursive=True)
    observer.start()
    try:
        (tmp_path / "new").mkdir()
        wait_until(lambda: str(tmp_path / "new") in created.paths, what="the event")
    finally:
        observer.stop()
        observer.join(timeout=5)

    assert type(observer).__name__ == "InotifyObserver"
    warnings = [r for r in caplog.records if r.name == inotify_signals.__name__]
    assert len(warnings) == 1
    assert "on_watches_reshuffled" in warnings[0].getMessage()
    assert "rescanning every 60 s instead" in warnings[0].getMessage()


def test_a_watchdog_without_the_internals_falls_back_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from watchdog.observers import inotify_c

    monkeypatch.delattr(inotify_c, "InotifyFD")

    assert not signals_heard()
    assert inotify_signals.watches_left()  # still answers
