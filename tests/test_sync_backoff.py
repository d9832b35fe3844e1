"""Backoff: the pauses the sync daemon takes before trying again, on an injected clock."""

from __future__ import annotations

import pytest

from comsa_migrate.sync.backoff import Backoff

from .helpers import Clock


def test_each_failure_doubles_the_pause_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 30.0, Clock())

    pauses = [backoff.failed() for _ in range(9)]

    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_the_next_attempt_is_due_once_the_pause_is_over() -> None:
    clock = Clock()
    backoff = Backoff(0.5, 30.0, clock)
    assert backoff.due()

    backoff.failed()
    backoff.failed()

    assert backoff.next_at == 101.0
    clock.now = 100.99
    assert not backoff.due()
    clock.now = 101.0
    assert backoff.due()


def test_a_reset_starts_again_from_the_first_pause_and_is_due_at_once() -> None:
    backoff = Backoff(0.05, 1.0, Clock())
    for _ in range(5):
        backoff.failed()

    backoff.reset()

    assert backoff.due()
    assert backoff.failed() == 0.05


def test_the_pause_is_what_the_next_failure_brings() -> None:
    backoff = Backoff(0.05, 1.0, Clock())
    backoff.failed()

    assert backoff.pause == 0.1
    assert backoff.failed() == 0.1


def test_a_long_outage_stays_at_the_cap() -> None:
    backoff = Backoff(0.5, 30.0, Clock())

    for _ in range(2000):
        backoff.failed()

    assert backoff.failed() == 30.0


@pytest.mark.parametrize(("first", "cap"), [(-1.0, 1.0), (2.0, 1.0)])
def test_a_negative_first_pause_or_a_cap_below_it_is_refused(first: float, cap: float) -> None:
    with pytest.raises(ValueError, match="first <= cap"):
        Backoff(first, cap)
