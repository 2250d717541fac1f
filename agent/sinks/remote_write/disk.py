"""The disk-backed queue of snapshots (docs/reliability.md): a restart, a crash or a reboot
loses none of what was measured while the receiver was away.

Layout: a directory of segment files named by a growing sequence number (`000…042.seg`)
and one `acked` file (the sequence number and offset up to which the receiver has accepted).
A segment is a run of records, each `length (u32) | CRC-32 of the payload (u32) | payload`,
the payload `timestamp ms (i64) | samples (u32) | a serialized remote-write WriteRequest` of one
snapshot (uncompressed: concatenated WriteRequests are one WriteRequest, so a batch is sent as
the payloads joined and compressed once).

- **Durability**: a snapshot is written and `fsync`ed before `push` returns (once per cycle;
  the directory is synced when a segment is created), so what `push` accepted survives a
  crash or a power loss. `acked` is replaced atomically after each accepted batch.
- **Replay**: at open, every segment is read back and checked; sending resumes after `acked`,
  oldest first, which is timestamp order (the sink drops samples stamped before the last one).
- **Bounds**: beyond `max_bytes`, or for records older than `max_age`, the oldest segments (or
  records) are dropped and counted (`buffer_full`, `expired`).
- **Damage**: a record whose length or checksum does not hold ends its segment there (a torn
  tail after a crash, or corruption); the rest of that segment is skipped and counted, never
  raised. Segments are rolled at a sixteenth of `max_bytes`, so the bound holds to 1/16.

Format weighed: sqlite3 (stdlib; crash-safe, but deleting rows does not give bytes back
without VACUUM, so a byte bound means rewriting the file) and persist-queue (pickles items,
locks for threads); length-and-CRC segment files are the WAL shape of Prometheus' agent and
vmagent, need nothing beyond the standard library, and make "drop the oldest" a file deletion.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cramjam

from agent.sinks.remote_write.snapshot import Snapshot
from agent.sinks.remote_write.wire import write_request

log = logging.getLogger("reachprobe")

HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload
META = struct.Struct("<qI")  # timestamp ms, samples
SUFFIX = ".seg"
ACKED = "acked"
# A record larger than this is damage, not data (a snapshot of 1,000 targets is ~1 MB).
MAX_RECORD = 256 << 20


@dataclass
class Segment:
    """One segment file: what of it is still unacknowledged."""

    seq: int
    path: Path
    start: int = 0  # offset of the first unacknowledged record
    size: int = 0  # bytes of whole, valid records
    samples: int = 0  # unacknowledged samples
    records: int = 0  # unacknowledged records
    last_ms: int = 0  # timestamp of the newest record


@dataclass(frozen=True)
class Record:
    """One snapshot read back from a segment, and where it ends."""

    seq: int
    start: int
    end: int
    timestamp_ms: int
    samples: int
    payload: bytes

    def __len__(self) -> int:
        return self.samples


def segment_name(seq: int) -> str:
    """The file name of segment `seq` (zero-padded, so names sort as numbers)."""
    return f"{seq:020d}{SUFFIX}"


def encode_record(snapshot: Snapshot) -> bytes:
    """A snapshot as one framed record."""
    payload = (
        META.pack(snapshot.timestamp_ms, len(snapshot))
        + write_request([snapshot]).SerializeToString()
    )
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(data: bytes, offset: int, seq: int) -> tuple[list[Record], int, bool]:
    """The whole, valid records of a segment's bytes from `offset`; the offset where they end;
    and whether anything after that is damage (torn or corrupt) rather than the end."""
    records: list[Record] = []
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        body = offset + HEADER.size
        if length < META.size or length > MAX_RECORD or body + length > len(data):
            return records, offset, True
        payload = data[body : body + length]
        if zlib.crc32(payload) != crc:
            return records, offset, True
        timestamp_ms, samples = META.unpack_from(payload)
        records.append(Record(seq, offset, body + length, timestamp_ms, samples, payload))
        offset = body + length
    return records, offset, offset != len(data)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskQueue:
    """Snapshots on disk, oldest first, within `max_bytes` and `max_age`.

    The same shape as the in-memory `SampleBuffer` (push, take, put_back, ack, encode), so the
    sender does not know which one it has. `on_drop(reason, samples)` hears of every drop.
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        max_age: float,
        on_drop: Callable[[str, int], None],
        clock: Callable[[], float],
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.segment_bytes = max(max_bytes // 16, 4096)
        self.on_drop = on_drop
        self.clock = clock  # wall time (the records' stamps are wall time)
        self.corrupt_segments = 0
        self._segments: list[Segment] = []
        self._read: tuple[int, int] | None = None  # (seq, offset) of the next record to take
        self._in_flight = (0, 0)  # samples, records taken and not yet acked or put back
        self._file: io.FileIO | None = None
        self._open()

    # -- opening and replay ------------------------------------------------------------------

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        acked_seq, acked_offset = self._read_acked()
        found = sorted(int(p.stem) for p in self.directory.glob(f"*{SUFFIX}") if p.stem.isdigit())
        for seq in found:
            path = self.directory / segment_name(seq)
            if seq < acked_seq:
                path.unlink(missing_ok=True)
                continue
            segment = Segment(seq, path, start=acked_offset if seq == acked_seq else 0)
            self._scan(segment)
            if segment.records:
                self._segments.append(segment)
            else:
                path.unlink(missing_ok=True)
        if self._segments:
            first = self._segments[0]
            self._read = (first.seq, first.start)
            log.info(
                "remote-write: %d samples from before the restart queued in %s",
                self.samples, self.directory,
            )  # fmt: skip
        next_seq = max(found, default=acked_seq) + 1
        self._new_segment(next_seq)

    def _read_acked(self) -> tuple[int, int]:
        try:
            seq, offset = (self.directory / ACKED).read_text(encoding="ascii").split()
            return int(seq), int(offset)
        except (OSError, ValueError):
            return 0, 0

    def _scan(self, segment: Segment) -> None:
        """Read a segment back, counting its records and noting damage."""
        try:
            data = segment.path.read_bytes()
        except OSError as exc:
            self._damaged(segment, f"unreadable: {exc}")
            return
        records, end, damaged = read_records(data, 0, segment.seq)
        segment.size = end
        for record in records:
            if record.start >= segment.start:
                segment.samples += record.samples
                segment.records += 1
            segment.last_ms = record.timestamp_ms
        if damaged:
            self._damaged(segment, f"{len(data) - end} bytes from offset {end} torn or corrupt")

    def _damaged(self, segment: Segment, why: str) -> None:
        self.corrupt_segments += 1
        self.on_drop("corrupt", 0)
        log.warning("remote-write: segment %s: %s; skipped from there", segment.path.name, why)

    # -- writing -----------------------------------------------------------------------------

    def _new_segment(self, seq: int) -> None:
        self._close_file()
        path = self.directory / segment_name(seq)
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (open between pushes)
        _fsync_directory(self.directory)
        self._segments.append(Segment(seq, path))
        if self._read is None:
            self._read = (seq, 0)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def push(self, snapshot: Snapshot) -> int:
        """Write `snapshot` to disk and fsync it; returns samples dropped for the bounds (an
        I/O error drops this snapshot, counted as `disk_error`, and is logged)."""
        record = encode_record(snapshot)
        tail = self._segments[-1]
        try:
            if tail.size and tail.size + len(record) > self.segment_bytes:
                self._new_segment(tail.seq + 1)
                tail = self._segments[-1]
            assert self._file is not None
            self._file.write(record)
            os.fsync(self._file.fileno())
        except OSError as exc:
            log.error("remote-write: cannot write the queue in %s: %s", self.directory, exc)
            self.on_drop("disk_error", len(snapshot))
            self._truncate_tail(tail)
            return 0
        tail.size += len(record)
        tail.samples += len(snapshot)
        tail.records += 1
        tail.last_ms = snapshot.timestamp_ms
        return self._enforce_bounds()

    def _truncate_tail(self, tail: Segment) -> None:
        """After a failed write, cut what may have been half written."""
        with contextlib.suppress(OSError):
            os.truncate(tail.path, tail.size)

    def _enforce_bounds(self) -> int:
        dropped = 0
        oldest_ms = int((self.clock() - self.max_age) * 1000)
        while len(self._segments) > 1:
            first = self._segments[0]
            over = self.bytes > self.max_bytes
            if not over and first.last_ms >= oldest_ms:
                break
            reason = "buffer_full" if over else "expired"
            self._drop_first(reason)
            dropped += first.samples if reason == "buffer_full" else 0
        return dropped

    def _drop_first(self, reason: str) -> None:
        first = self._segments.pop(0)
        first.path.unlink(missing_ok=True)
        if self._read is not None and self._read[0] <= first.seq:
            self._read = (self._segments[0].seq, self._segments[0].start)
            self._in_flight = (0, 0)  # a batch in flight from it: its ack moves nothing back
        if reason != "buffer_full":
            self.on_drop(reason, first.samples)

    # -- reading and acknowledging -----------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes on disk still to be acknowledged."""
        return sum(s.size - s.start for s in self._segments)

    @property
    def samples(self) -> int:
        """Samples waiting for their first or next send (not counting a batch in flight)."""
        return sum(s.samples for s in self._segments) - self._in_flight[0]

    def __len__(self) -> int:
        return sum(s.records for s in self._segments) - self._in_flight[1]

    def _segment(self, seq: int) -> Segment | None:
        return next((s for s in self._segments if s.seq == seq), None)

    def take(self, max_samples: int) -> list[Record]:
        """The oldest records not yet taken, up to `max_samples` samples (at least one);
        records past `max_age` are dropped on the way, damage skipped."""
        batch: list[Record] = []
        taken = 0
        oldest_ms = int((self.clock() - self.max_age) * 1000)
        while self._read is not None and (not batch or taken < max_samples):
            seq, offset = self._read
            segment = self._segment(seq)
            if segment is None or offset >= segment.size:
                following = [s for s in self._segments if s.seq > seq]
                if not following:
                    break
                self._read = (following[0].seq, following[0].start)
                continue
            records = self._records_from(segment, offset)
            for record in records:
                if batch and taken + record.samples > max_samples:
                    break
                self._read = (seq, record.end)
                if not batch and record.timestamp_ms < oldest_ms:
                    self._forget(segment, record)
                    self.on_drop("expired", record.samples)
                    continue
                batch.append(record)
                taken += record.samples
            else:
                continue
            break
        self._in_flight = (taken, len(batch))
        return batch

    def _records_from(self, segment: Segment, offset: int) -> list[Record]:
        try:
            with open(segment.path, "rb") as f:
                f.seek(offset)
                data = f.read(segment.size - offset)
        except OSError as exc:
            data = b""
            self._damaged(segment, f"unreadable: {exc}")
        records, end, _ = read_records(data, 0, segment.seq)
        records = [
            Record(r.seq, r.start + offset, r.end + offset, r.timestamp_ms, r.samples, r.payload)
            for r in records
        ]
        if offset + end < segment.size:
            # Changed since it was scanned: what no longer reads is skipped, once.
            self._damaged(segment, f"bytes after offset {offset + end} no longer read")
            segment.size = offset + end
        return records

    def _forget(self, segment: Segment, record: Record) -> None:
        segment.samples -= record.samples
        segment.records -= 1
        segment.start = record.end

    def put_back(self, batch: Sequence[Record]) -> int:
        """An unsent batch: take it again next time (it never left the disk)."""
        if batch and self._segment(batch[0].seq) is not None:
            self._read = (batch[0].seq, batch[0].start)
        self._in_flight = (0, 0)
        return 0

    def ack(self, batch: Sequence[Record]) -> None:
        """The receiver has `batch`: note it in `acked`, delete segments wholly delivered."""
        self._in_flight = (0, 0)
        for record in batch:
            segment = self._segment(record.seq)
            if segment is not None and record.start >= segment.start:
                self._forget(segment, record)
        if not batch:
            return
        last = batch[-1]
        while len(self._segments) > 1 and self._segments[0].records == 0:
            self._segments.pop(0).path.unlink(missing_ok=True)
        self._write_acked(last.seq, last.end)

    def _write_acked(self, seq: int, offset: int) -> None:
        tmp = self.directory / f"{ACKED}.tmp"
        try:
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{seq} {offset}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.directory / ACKED)
        except OSError as exc:
            # Not fatal: after a restart the batch is sent again (a duplicate the receiver
            # keeps once, or refuses as out of order).
            log.warning("remote-write: cannot note the acknowledgement: %s", exc)

    @staticmethod
    def encode(batch: Sequence[Record]) -> bytes:
        """The request body for `batch`: its WriteRequests joined, then compressed."""
        return bytes(cramjam.snappy.compress_raw(b"".join(r.payload[META.size :] for r in batch)))

    def close(self) -> None:
        """Close the open segment (everything pushed is already on disk)."""
        self._close_file()
