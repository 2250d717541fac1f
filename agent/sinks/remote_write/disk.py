"""The disk-backed queue of snapshots (docs/reliability.md): a restart, a crash or a reboot
loses none of what was measured while the receiver was away.

Layout: a directory of segment files named by a growing sequence number (`000…042.seg`)
and one `acked` file (the sequence number and offset up to which the receiver has accepted).
A segment is a run of records, each `length (u32) | CRC-32 of the payload (u32) | payload`:
first a series record (kind 1: every label set, JSON, zstd), then one samples record per
snapshot (kind 2: `timestamp ms (i64) | samples (u32) | the values as float64, zstd`). A
snapshot whose series set differs starts a new segment, so each segment reads alone and
"drop the oldest" is a file deletion; the labels are written once per segment, not per sample.

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
import json
import logging
import os
import struct
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cramjam

from agent.sinks.remote_write.snapshot import LabelSet, Snapshot
from agent.sinks.remote_write.wire import encode_write_request

log = logging.getLogger("reachprobe")

HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload
SAMPLES = struct.Struct("<BqI")  # kind, timestamp ms, samples; then the values, zstd
SERIES_KIND, SAMPLES_KIND = 1, 2
SUFFIX = ".seg"
ACKED = "acked"
# A record larger than this is damage, not data (the series of 1,000 targets are ~2 MB).
MAX_RECORD = 256 << 20


class Damage(ValueError):
    """Bytes of a segment that are not a whole, decodable record (torn, corrupt)."""

    def __init__(self, why: str, offset: int = 0) -> None:
        super().__init__(why)
        self.offset = offset


@dataclass
class Segment:
    """One segment file: what of it is still unacknowledged."""

    seq: int
    path: Path
    start: int = 0  # offset of the first unacknowledged record
    size: int = 0  # bytes of whole, valid records
    samples: int = 0  # unacknowledged samples
    records: int = 0  # unacknowledged sample records
    last_ms: int = 0  # timestamp of the newest record
    series: tuple[LabelSet, ...] | None = None  # its series record, once read or written


@dataclass(frozen=True)
class Record:
    """One snapshot read back from a segment, and where it ends."""

    seq: int
    start: int
    end: int
    snapshot: Snapshot

    def __len__(self) -> int:
        return len(self.snapshot)


def segment_name(seq: int) -> str:
    """The file name of segment `seq` (zero-padded, so names sort as numbers)."""
    return f"{seq:020d}{SUFFIX}"


def frame(payload: bytes) -> bytes:
    """`payload` framed: its length and checksum first."""
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def encode_series(series: tuple[LabelSet, ...]) -> bytes:
    """The series record a segment starts with: every label set, in the values' order."""
    text = json.dumps([list(map(list, labels)) for labels in series], separators=(",", ":"))
    return frame(bytes([SERIES_KIND]) + bytes(cramjam.zstd.compress(text.encode())))


def encode_samples(snapshot: Snapshot) -> bytes:
    """A snapshot's record: its stamp and its values (the series are the segment's)."""
    values = bytes(cramjam.zstd.compress(snapshot.values.tobytes()))
    return frame(SAMPLES.pack(SAMPLES_KIND, snapshot.timestamp_ms, len(snapshot)) + values)


def decode_series(payload: bytes | memoryview) -> tuple[LabelSet, ...]:
    """The label sets of a series record."""
    try:
        rows = json.loads(bytes(cramjam.zstd.decompress(bytes(payload[1:]))))
        return tuple(tuple((str(k), str(v)) for k, v in labels) for labels in rows)
    except (ValueError, TypeError, cramjam.DecompressionError) as exc:
        raise Damage(f"a series record does not decode ({exc})") from exc


def samples_header(payload: bytes | memoryview) -> tuple[int, int, int]:
    """kind, timestamp ms and sample count of a samples record."""
    if len(payload) < SAMPLES.size or payload[0] != SAMPLES_KIND:
        raise Damage(f"a record of unknown kind {payload[0]}")
    return SAMPLES.unpack_from(payload)


def decode_samples(payload: bytes | memoryview, series: tuple[LabelSet, ...] | None) -> Snapshot:
    """The snapshot of a samples record, under its segment's `series`."""
    _, timestamp_ms, count = samples_header(payload)
    if series is None:
        raise Damage("a samples record without its series record")
    try:
        values = array("d", bytes(cramjam.zstd.decompress(bytes(payload[SAMPLES.size :]))))
    except (ValueError, cramjam.DecompressionError) as exc:
        raise Damage(f"a samples record does not decode ({exc})") from exc
    if len(values) != count or count != len(series):
        raise Damage(f"{len(values)} values for {len(series)} series")
    return Snapshot(timestamp_ms, series, values)


def iter_frames(data: bytes, offset: int) -> Iterator[tuple[int, int, memoryview]]:
    """The whole, checksummed frames of a segment's bytes from `offset`, as (start, end,
    payload); raises `Damage` (with `.offset`) where what follows is torn or corrupt."""
    view = memoryview(data)
    while offset < len(data):
        body = offset + HEADER.size
        if body > len(data):
            raise Damage("a torn record header", offset)
        length, crc = HEADER.unpack_from(data, offset)
        if not 0 < length <= MAX_RECORD or body + length > len(data):
            raise Damage(f"a record of {length} bytes does not fit", offset)
        payload = view[body : body + length]
        if zlib.crc32(payload) != crc:
            raise Damage("a record's checksum does not match", offset)
        yield offset, body + length, payload
        offset = body + length


def read_records(data: bytes, seq: int) -> tuple[list[Record], int, Damage | None]:
    """Every snapshot of a whole segment's bytes; where whole records end; the damage that
    ended them early, if any (tests and tools; the queue reads frame by frame)."""
    records: list[Record] = []
    series: tuple[LabelSet, ...] | None = None
    end = 0
    try:
        for start, stop, payload in iter_frames(data, 0):
            if payload[0] == SERIES_KIND:
                series = decode_series(payload)
            else:
                records.append(Record(seq, start, stop, decode_samples(payload, series)))
            end = stop
    except Damage as exc:
        return records, end, exc
    return records, end, None


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
        self._reading: tuple[int, bytes] = (-1, b"")  # the segment being read, whole
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
        self._new_segment(max(found, default=acked_seq) + 1)

    def _read_acked(self) -> tuple[int, int]:
        try:
            seq, offset = (self.directory / ACKED).read_text(encoding="ascii").split()
            return int(seq), int(offset)
        except (OSError, ValueError):
            return 0, 0

    def _scan(self, segment: Segment) -> None:
        """Check a segment and count its records (headers only: values stay compressed)."""
        try:
            data = segment.path.read_bytes()
        except OSError as exc:
            self._damaged(segment, f"unreadable: {exc}")
            return
        try:
            for start, stop, payload in iter_frames(data, 0):
                if payload[0] == SERIES_KIND:
                    segment.series = decode_series(payload)
                else:
                    _, timestamp_ms, count = samples_header(payload)
                    if segment.series is None or count != len(segment.series):
                        raise Damage("a samples record that does not fit its series", start)
                    if start >= segment.start:
                        segment.samples += count
                        segment.records += 1
                    segment.last_ms = timestamp_ms
                segment.size = stop
        except Damage as exc:
            where = exc.offset if exc.offset else segment.size
            self._damaged(segment, f"{exc} at offset {where}")
        segment.series = None  # read again when it is sent: a day of tables stays on disk

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
        I/O error drops this snapshot, counted as `disk_error`, and is logged).

        A segment holds one series set: a snapshot whose series differ from the segment's
        starts a new segment with a series record, so a segment reads alone."""
        tail = self._segments[-1]
        samples = encode_samples(snapshot)
        try:
            if tail.records and (
                tail.series is not snapshot.series or tail.size + len(samples) > self.segment_bytes
            ):
                self._new_segment(tail.seq + 1)
                tail = self._segments[-1]
            record = samples if tail.records else encode_series(snapshot.series) + samples
            assert self._file is not None
            self._file.write(record)
            os.fsync(self._file.fileno())
        except OSError as exc:
            log.error("remote-write: cannot write the queue in %s: %s", self.directory, exc)
            self.on_drop("disk_error", len(snapshot))
            with contextlib.suppress(OSError):
                os.truncate(tail.path, tail.size)  # what may have been half written
            return 0
        tail.series = snapshot.series
        tail.size += len(record)
        tail.samples += len(snapshot)
        tail.records += 1
        tail.last_ms = snapshot.timestamp_ms
        return self._enforce_bounds()

    def _enforce_bounds(self) -> int:
        dropped = 0
        oldest_ms = int((self.clock() - self.max_age) * 1000)
        while len(self._segments) > 1:
            first = self._segments[0]
            over = self.bytes > self.max_bytes
            if not over and first.last_ms >= oldest_ms:
                break
            self._drop_first()
            if over:
                dropped += first.samples
            else:
                self.on_drop("expired", first.samples)
        return dropped

    def _drop_first(self) -> None:
        first = self._segments.pop(0)
        first.path.unlink(missing_ok=True)
        if self._read is not None and self._read[0] <= first.seq:
            self._read = (self._segments[0].seq, self._segments[0].start)
            self._in_flight = (0, 0)  # a batch in flight from it: its ack moves nothing back

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

    def _bytes_of(self, segment: Segment) -> bytes:
        """A segment's bytes, kept while it is being read (one segment at a time)."""
        if self._reading[0] != segment.seq or len(self._reading[1]) < segment.size:
            try:
                data = segment.path.read_bytes()[: segment.size]
            except OSError as exc:
                self._damaged(segment, f"unreadable: {exc}")
                data = b""
            self._reading = (segment.seq, data)
        return self._reading[1]

    def take(self, max_samples: int) -> list[Record]:
        """The oldest records not yet taken, up to `max_samples` samples (at least one);
        records past `max_age` are dropped on the way, damage skipped and counted."""
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
            record = self._record_at(segment, offset)
            if record is None:
                continue  # damage: the segment ends here now
            if batch and taken + len(record) > max_samples:
                break
            self._read = (seq, record.end)
            if not batch and record.snapshot.timestamp_ms < oldest_ms:
                self._forget(segment, record)
                self.on_drop("expired", len(record))
                continue
            batch.append(record)
            taken += len(record)
        self._in_flight = (taken, len(batch))
        return batch

    def _record_at(self, segment: Segment, offset: int) -> Record | None:
        """The samples record at `offset`, reading the series record on the way (a segment's
        first) or from the start (when sending resumes mid-segment after a restart)."""
        data = self._bytes_of(segment)
        try:
            for start, end, payload in iter_frames(data, offset):
                if payload[0] == SERIES_KIND:
                    segment.series = decode_series(payload)
                    self._read = (segment.seq, end)
                    continue
                if segment.series is None:
                    segment.series = decode_series(next(iter_frames(data, 0))[2])
                return Record(segment.seq, start, end, decode_samples(payload, segment.series))
            raise Damage("no record")
        except (Damage, StopIteration) as exc:
            self._damaged(segment, f"{exc or 'no series record'} at offset {offset} when read")
            self._drop_rest(segment, offset)
            return None

    def _drop_rest(self, segment: Segment, offset: int) -> None:
        """What of a segment no longer reads: gone from the counts (never sent)."""
        segment.size = offset
        segment.samples = segment.records = 0
        self._read = (segment.seq, offset)

    def _forget(self, segment: Segment, record: Record) -> None:
        segment.samples -= len(record)
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
        while len(self._segments) > 1 and self._segments[0].records == 0:
            self._segments.pop(0).path.unlink(missing_ok=True)
        self._write_acked(batch[-1].seq, batch[-1].end)

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
        """The request body for `batch`."""
        return encode_write_request([r.snapshot for r in batch])

    def close(self) -> None:
        """Close the open segment (everything pushed is already on disk)."""
        self._close_file()
