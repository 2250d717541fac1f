"""The bounded in-memory queue of snapshots waiting to be sent."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from agent.sinks.remote_write.snapshot import Snapshot
from agent.sinks.remote_write.wire import encode_write_request


class Queue(Protocol):
    """What the sender needs of a queue: the memory `SampleBuffer` or the disk `DiskQueue`.

    `take` hands out the oldest batch; the sender then either `ack`s it (delivered, or refused
    for good) or `put_back`s it (to retry). `push` and `put_back` return samples dropped for
    the bound.
    """

    samples: int

    def __len__(self) -> int: ...
    def push(self, snapshot: Snapshot) -> int: ...
    def take(self, max_samples: int) -> Sequence[Any]: ...
    def put_back(self, batch: Sequence[Any]) -> int: ...
    def ack(self, batch: Sequence[Any]) -> None: ...
    def encode(self, batch: Sequence[Any]) -> bytes: ...
    def close(self) -> None: ...


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

    def ack(self, batch: Sequence[Snapshot]) -> None:
        """The receiver has `batch` (taken already: nothing to do in memory)."""

    @staticmethod
    def encode(batch: Sequence[Snapshot]) -> bytes:
        """The request body for `batch`."""
        return encode_write_request(batch)

    def close(self) -> None:
        """Nothing held but memory."""

    def _trim(self) -> int:
        dropped = 0
        while self.samples > self.max_samples and len(self._snapshots) > 1:
            oldest = self._snapshots.popleft()
            self.samples -= len(oldest)
            dropped += len(oldest)
        return dropped
