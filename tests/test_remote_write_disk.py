"""The disk-backed remote-write queue (agent/sinks/remote_write/disk.py) on a real directory:
replay after reopening, acknowledgement, the byte and age bounds, torn and corrupt segments."""

from __future__ import annotations

from array import array
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sinks.remote_write.disk import ACKED, SUFFIX, DiskQueue, read_records
from agent.sinks.remote_write.snapshot import Snapshot
from agent.sinks.remote_write.wire import decode_write_request

SERIES = tuple(
    (("__name__", "reachprobe_target_up"), ("job", "reachprobe"), ("target", f"t{i}"))
    for i in range(200)
)


def snapshot(n: int) -> Snapshot:
    """Snapshot number `n`: stamped n seconds after 1,700,000,000 s; the first series' value
    is n (the others vary, so that records do not compress to nothing)."""
    values = array("d", [n + i / 7 for i in range(len(SERIES))])
    return Snapshot((1_700_000_000 + n) * 1000, SERIES, values)


class Drops:
    def __init__(self) -> None:
        self.by_reason: dict[str, int] = {}

    def __call__(self, reason: str, samples: int) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + (samples or 1)


def queue(directory: Path, drops: Drops | None = None, **kw: float) -> DiskQueue:
    clock = kw.pop("clock", 1_700_000_000 + 10**6)
    return DiskQueue(
        directory,
        int(kw.pop("max_bytes", 1 << 20)),
        kw.pop("max_age", 10**7),
        drops or Drops(),
        lambda: clock,
    )


def numbers(q: DiskQueue, batch: list) -> list[int]:
    """The snapshot numbers a batch carries, read back through the wire format."""
    series = decode_write_request(q.encode(batch))
    points = series[SERIES[0]]
    return [int(value) for _, value in points]


def drain(q: DiskQueue, per_batch: int = 50) -> list[int]:
    got: list[int] = []
    while len(q):
        batch = q.take(per_batch)
        got += numbers(q, batch)
        q.ack(batch)
    return got


def test_what_was_pushed_is_replayed_after_reopening_oldest_first(tmp_path: Path) -> None:
    q = queue(tmp_path)
    for n in range(10):
        q.push(snapshot(n))
    q.close()  # as a SIGKILL leaves it: nothing more than what push already fsynced
    again = queue(tmp_path)
    assert again.samples == 10 * len(SERIES)
    assert drain(again) == list(range(10))
    assert again.samples == 0


def test_acknowledged_records_are_not_sent_again_and_segments_go(tmp_path: Path) -> None:
    q = queue(tmp_path, max_bytes=64 << 10)  # 4 KiB segments: a few records each
    for n in range(30):
        q.push(snapshot(n))
    batch = q.take(12 * len(SERIES))
    assert numbers(q, batch) == list(range(12))
    q.ack(batch)
    unacked = q.take(len(SERIES))
    q.put_back(unacked)  # a failed send: it stays
    q.close()
    assert (tmp_path / ACKED).exists()
    again = queue(tmp_path, max_bytes=64 << 10)
    assert drain(again) == list(range(12, 30))
    again.close()
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) == 1  # only the open, empty one


def test_beyond_the_byte_bound_the_oldest_are_dropped_and_counted(tmp_path: Path) -> None:
    drops = Drops()
    q = queue(tmp_path, drops, max_bytes=64 << 10)
    dropped = sum(q.push(snapshot(n)) for n in range(200))
    assert dropped > 0
    assert q.bytes <= (64 << 10) + q.segment_bytes
    on_disk = sum(p.stat().st_size for p in tmp_path.glob(f"*{SUFFIX}"))
    assert on_disk <= (64 << 10) + q.segment_bytes
    kept = drain(q)
    assert kept == list(range(200 - len(kept), 200)), "the newest kept, in order"
    assert dropped == (200 - len(kept)) * len(SERIES)


def test_records_older_than_max_age_are_dropped_and_counted(tmp_path: Path) -> None:
    drops = Drops()
    # The clock stands at snapshot 100's stamp; max_age 30 s keeps 70 and later.
    q = queue(tmp_path, drops, max_age=30, clock=1_700_000_100)
    for n in range(0, 100, 10):
        q.push(snapshot(n))
    assert drain(q) == [70, 80, 90]
    assert drops.by_reason["expired"] == 7 * len(SERIES)


def test_a_torn_tail_is_skipped_with_a_count_and_writing_goes_on(tmp_path: Path) -> None:
    q = queue(tmp_path)
    for n in range(5):
        q.push(snapshot(n))
    q.close()
    segment = max(tmp_path.glob(f"*{SUFFIX}"))
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 7])  # the last record half written
    drops = Drops()
    again = queue(tmp_path, drops)
    assert drops.by_reason == {"corrupt": 1}
    again.push(snapshot(5))
    assert drain(again) == [0, 1, 2, 3, 5]


def test_a_corrupt_record_ends_its_segment_never_the_agent(tmp_path: Path) -> None:
    q = queue(tmp_path)
    for n in range(5):
        q.push(snapshot(n))
    q.close()
    segment = max(tmp_path.glob(f"*{SUFFIX}"))
    data = bytearray(segment.read_bytes())
    records, _, _ = read_records(bytes(data), 1)
    data[records[2].start + 12] ^= 0xFF  # a flipped byte in the third snapshot
    segment.write_bytes(bytes(data))
    drops = Drops()
    got = drain(queue(tmp_path, drops))
    assert drops.by_reason == {"corrupt": 1}
    assert got == [0, 1]


def test_garbage_files_and_a_bad_ack_file_do_not_stop_the_queue(tmp_path: Path) -> None:
    (tmp_path / f"{7:020d}{SUFFIX}").write_bytes(b"\xff" * 100)
    (tmp_path / ACKED).write_text("not numbers")
    drops = Drops()
    q = queue(tmp_path, drops)
    q.push(snapshot(1))
    assert drain(q) == [1]
    assert drops.by_reason == {"corrupt": 1}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_read_as_records_or_damage(data: bytes) -> None:
    records, end, damage = read_records(data, 1)
    assert 0 <= end <= len(data)
    assert (damage is None) == (end == len(data))
    assert all(r.end <= end for r in records)
