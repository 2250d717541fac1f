"""The bounded in-memory queue of snapshots waiting to be sent."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from agent.sinks.remote_write.snapshot import Snapshot


class SampleBuffer:
    """Snapshots waiting to be sent, oldest first, at most `max_samples` samples in all.

    Adding beyond the bound drops whole snapshots from the old end: after a long outage the
    receiver gets the most recent history, and the drop is counted.
    """

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self._snapshots: deque[Snapshot] = deque()
        self.samples = 0

    def __len__(self) -> int:
        return len(self._snapshots)

    def push(self, snapshot: Snapshot) -> int:
        """Append `snapshot`; returns how many samples were dropped to stay within the bound."""
        self._snapshots.append(snapshot)
        self.samples += len(snapshot)
        return self._trim()

    def take(self, max_samples: int) -> list[Snapshot]:
        """Remove and return the oldest snapshots, up to `max_samples` samples (at least one)."""
        batch: list[Snapshot] = []
        taken = 0
        while self._snapshots and (not batch or taken + len(self._snapshots[0]) <= max_samples):
            snapshot = self._snapshots.popleft()
            batch.append(snapshot)
            taken += len(snapshot)
        self.samples -= taken
        return batch

    def put_back(self, batch: Iterable[Snapshot]) -> int:
        """Return an unsent batch to the front; returns samples dropped to stay within bound."""
        for snapshot in reversed(list(batch)):
            self._snapshots.appendleft(snapshot)
            self.samples += len(snapshot)
        return self._trim()

    def _trim(self) -> int:
        dropped = 0
        while self.samples > self.max_samples and len(self._snapshots) > 1:
            oldest = self._snapshots.popleft()
            self.samples -= len(oldest)
            dropped += len(oldest)
        return dropped
