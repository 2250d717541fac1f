"""Cycle pacing: when each cycle is due, and how late it really started.

A cycle that outruns the interval (thousands of blackholed targets, a starved CPU) delays the
next one, and a long enough overrun leaves whole intervals without a cycle. Neither may be
silent: the scheduler reports both as metrics (`reachprobe_cycles_late_total`,
`reachprobe_cycles_skipped_total`, `reachprobe_cycle_start_lateness_seconds`). This module is
the arithmetic, on monotonic seconds, free of I/O so that it is tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CycleStart:
    """How one cycle's start compared with its slot."""

    lateness: float  # seconds after its slot (0 when on time or early)
    late: bool  # lateness beyond the tolerance (event-loop jitter is not lateness)
    skipped: int  # whole intervals that passed without a cycle starting


class Pacer:
    """The slots cycles are due in: one every `interval` from `first_slot`."""

    def __init__(self, interval: float, first_slot: float) -> None:
        self.interval = interval
        self.next_slot = first_slot

    @property
    def tolerance(self) -> float:
        """Lateness that still counts as on time: 5% of the interval, at most one second."""
        return min(1.0, self.interval * 0.05)

    def start(self, now: float) -> CycleStart:
        """Record a cycle starting at `now`; the next slot moves past it."""
        lateness = max(0.0, now - self.next_slot)
        skipped = int(lateness // self.interval)
        # An early start (a reload runs a cycle at once) restarts the rhythm from now.
        base = self.next_slot if now >= self.next_slot else now
        self.next_slot = base + (skipped + 1) * self.interval
        return CycleStart(lateness, lateness > self.tolerance, skipped)

    def wait(self, now: float) -> float:
        """Seconds from `now` to the next slot (0 when it is already due)."""
        return max(0.0, self.next_slot - now)

    def set_interval(self, interval: float) -> None:
        """A reloaded config's interval, from the next slot on."""
        self.interval = interval
