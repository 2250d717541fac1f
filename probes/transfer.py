"""What arrived for one HTTP response, read by read: bytes off the wire (ciphertext under
TLS), TLS records, the time to the first byte and the longest silence between reads.

These are facts, not guesses: a response cut by the deadline is told apart as "stalled" (no
data for a while: a freeze, a dead path) or "still arriving" (a slow or throttled transfer),
from the reads themselves (docs/taxonomy.md, "Slow and stalled transfers").
"""

from __future__ import annotations

from dataclasses import dataclass

# TLS record header: content type (1), version (2), length (2).
_RECORD_HEADER = 5


@dataclass(slots=True)
class RecordCounter:
    """Counts TLS records in a ciphertext byte stream fed from its very first byte (so that
    record boundaries stay aligned), however the reads split them."""

    records: int = 0
    _header: bytes = b""
    _left: int = 0

    def feed(self, data: bytes) -> None:
        at = 0
        while at < len(data):
            if self._left:
                step = min(self._left, len(data) - at)
                self._left -= step
                at += step
                continue
            need = _RECORD_HEADER - len(self._header)
            self._header += data[at : at + need]
            at += need
            if len(self._header) == _RECORD_HEADER:
                self.records += 1
                self._left = int.from_bytes(self._header[3:5], "big")
                self._header = b""


@dataclass(slots=True)
class Transfer:
    """The reads of one response since its request was sent at `started` (loop time);
    `counter` is the stream's TLS record counter (None for plain TCP)."""

    started: float
    counter: RecordCounter | None = None
    received: int = 0
    first_byte: float | None = None
    last_read: float | None = None
    longest_gap: float = 0.0
    _records_before: int = 0

    def __post_init__(self) -> None:
        self._records_before = self.counter.records if self.counter is not None else 0

    @property
    def records(self) -> int | None:
        """TLS records received since `started` (None for plain TCP)."""
        return None if self.counter is None else self.counter.records - self._records_before

    def read(self, size: int, now: float) -> None:
        """`size` bytes came off the socket at `now`."""
        if size <= 0:
            return
        if self.last_read is not None:
            self.longest_gap = max(self.longest_gap, now - self.last_read)
        else:
            self.first_byte = now
        self.last_read = now
        self.received += size

    def time_to_first_byte(self) -> float | None:
        return None if self.first_byte is None else self.first_byte - self.started

    def silence(self, now: float) -> float:
        """How long nothing has arrived at `now` (since the request, before any byte)."""
        return now - (self.last_read if self.last_read is not None else self.started)

    def gap(self, now: float, cut: bool) -> float | None:
        """The longest silence between reads; for a transfer cut at `now`, the silence it
        was cut in counts too."""
        if self.first_byte is None:
            return None
        return max(self.longest_gap, self.silence(now)) if cut else self.longest_gap

    def rate(self, now: float) -> float | None:
        """Bytes per second since the first byte, at `now`."""
        if self.first_byte is None or now <= self.first_byte:
            return None
        return self.received / (now - self.first_byte)

    def stalled(self, now: float, stall_after: float) -> bool:
        """Whether a transfer cut at `now` had stopped (nothing for `stall_after` seconds)
        rather than still arriving."""
        return self.silence(now) >= stall_after

    def describe_cut(self, now: float, stall_after: float) -> str:
        """The detail of a transfer cut by the deadline at `now`."""
        records = self.records
        unit = f"{self.received} bytes" + (f" in {records} TLS records" if records else "")
        if self.stalled(now, stall_after):
            return f"stalled after {unit} (no data for {self.silence(now):.1f} s)"
        rate = self.rate(now) or 0.0
        return f"still arriving at {rate:.0f} B/s at the deadline ({unit})"
