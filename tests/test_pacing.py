"""Cycle pacing (agent/pacing.py): late and skipped cycles are named, never silent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.pacing import Pacer


def test_on_time_cycles_are_neither_late_nor_skipped() -> None:
    pacer = Pacer(10.0, first_slot=100.0)
    for slot in (100.0, 110.0, 120.0):
        start = pacer.start(slot + 0.01)  # loop jitter
        assert (start.late, start.skipped) == (False, 0)
        assert pacer.next_slot == slot + 10.0


def test_an_overrun_is_late_and_whole_missed_intervals_are_skipped() -> None:
    pacer = Pacer(2.0, first_slot=0.0)
    pacer.start(0.0)
    start = pacer.start(7.5)  # due at 2.0: 5.5s late, the slots at 4.0 and 6.0 were missed
    assert start.late
    assert start.lateness == pytest.approx(5.5)
    assert start.skipped == 2
    assert pacer.next_slot == 8.0  # back on the original rhythm
    assert pacer.wait(7.5) == pytest.approx(0.5)


def test_an_early_start_restarts_the_rhythm() -> None:
    pacer = Pacer(60.0, first_slot=0.0)
    pacer.start(0.0)
    start = pacer.start(20.0)  # a reload ran a cycle at once
    assert (start.late, start.skipped, start.lateness) == (False, 0, 0.0)
    assert pacer.next_slot == 80.0


def test_a_new_interval_applies_from_the_next_slot() -> None:
    pacer = Pacer(10.0, first_slot=0.0)
    pacer.start(0.0)
    pacer.set_interval(30.0)
    pacer.start(10.0)
    assert pacer.next_slot == 40.0


@given(
    st.floats(min_value=0.1, max_value=3600),
    st.lists(st.floats(min_value=0, max_value=10_000), min_size=1, max_size=30),
)
def test_skipped_intervals_account_for_the_lateness(interval: float, delays: list[float]) -> None:
    pacer = Pacer(interval, first_slot=0.0)
    now = 0.0
    for delay in delays:
        now = max(now, pacer.next_slot - interval) + delay  # starts never go back in time
        start = pacer.start(now)
        assert start.skipped * interval <= start.lateness + 1e-6
        assert start.lateness < (start.skipped + 1) * interval + 1e-6
        assert pacer.next_slot > now - 1e-6
        assert start.late == (start.lateness > pacer.tolerance)
