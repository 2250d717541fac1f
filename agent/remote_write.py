"""Prometheus remote-write 1.0 for agents that nobody can scrape (behind a home NAT).

The pieces, each usable on its own:
- `snapshot_registry`: every sample of a prometheus_client registry, under one timestamp, with
  the `job` and `instance` labels the rules join on (the configured ones, never an address);
- `encode_write_request`: snapshots -> a snappy-compressed protobuf `WriteRequest` (spec 1.0);
- `SampleBuffer`: the bounded in-memory queue of snapshots, dropping the oldest when full;
- `RemoteWriter`: sends the queue in order, with auth from files, a CA file, timeouts and
  exponential backoff; `flush` empties it within a bound (on shutdown).

Memory is bounded by `max_buffered_samples`: a snapshot whose series set did not change shares
its label tuples with the previous one, so a buffered sample costs its 8-byte value plus a
few bytes of bookkeeping (docs/operators.md has the measured figure). Nothing is written to
disk. The protobuf messages are built at import time from a descriptor (the three messages of
remote.proto and types.proto that 1.0 uses), so no generated code is shipped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
import weakref
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

import aiohttp
import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.config import RemoteWriteConfig

log = logging.getLogger("reachprobe")

LabelSet = tuple[tuple[str, str], ...]
_HAS_CREATED = {"counter", "histogram", "summary"}

# The spec asks for a User-Agent; a generic one keeps "reachprobe" off the volunteer's wire,
# like every other request the agent makes.
USER_AGENT = "remote-write-client/1.0"
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "User-Agent": USER_AGENT,
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def _write_request_class() -> type:
    """prometheus.WriteRequest (with TimeSeries, Label, Sample) built from a descriptor."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="reachprobe_remote_write.proto", package="prometheus", syntax="proto3"
    )
    messages: dict[str, list[tuple[str, int, int, str | None]]] = {
        "Label": [("name", 1, field.TYPE_STRING, None), ("value", 2, field.TYPE_STRING, None)],
        "Sample": [("value", 1, field.TYPE_DOUBLE, None), ("timestamp", 2, field.TYPE_INT64, None)],
        "TimeSeries": [
            ("labels", 1, field.TYPE_MESSAGE, ".prometheus.Label"),
            ("samples", 2, field.TYPE_MESSAGE, ".prometheus.Sample"),
        ],
        "WriteRequest": [("timeseries", 1, field.TYPE_MESSAGE, ".prometheus.TimeSeries")],
    }
    for name, fields in messages.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            repeated = kind == field.TYPE_MESSAGE
            entry = message.field.add(
                name=field_name,
                number=number,
                type=kind,  # type: ignore[arg-type]
                label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL,  # type: ignore[arg-type]
            )
            if type_name:
                entry.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _write_request_class()


@dataclass(frozen=True)
class Snapshot:
    """Every sample of a registry at one instant: `values[i]` belongs to `series[i]`."""

    timestamp_ms: int
    series: tuple[LabelSet, ...]
    values: array

    def __len__(self) -> int:
        return len(self.values)


def snapshot_registry(
    registry: CollectorRegistry,
    identity: dict[str, str],
    timestamp: float,
    previous: Snapshot | None = None,
) -> Snapshot:
    """All samples of `registry` at `timestamp` (seconds), labelled with `identity`.

    `identity` (job and instance) overrides labels of the same name. When the series set equals
    `previous`'s, its label tuples are reused, so a buffered snapshot costs little more than
    its values.
    """
    series: list[LabelSet] = []
    values = array("d")
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created") and family.type in _HAS_CREATED:
                continue  # as on /metrics, where the agent disables them: a series each, no use
            labels = {**sample.labels, **identity, "__name__": sample.name}
            series.append(tuple(sorted(labels.items())))
            values.append(sample.value)
    keys = tuple(series)
    if previous is not None and previous.series == keys:
        keys = previous.series
    return Snapshot(int(timestamp * 1000), keys, values)


def encode_write_request(snapshots: Sequence[Snapshot]) -> bytes:
    """A snappy-compressed (block format) protobuf WriteRequest carrying `snapshots` in order."""
    samples: dict[LabelSet, list[tuple[float, int]]] = {}
    for snapshot in snapshots:
        for labels, value in zip(snapshot.series, snapshot.values, strict=True):
            samples.setdefault(labels, []).append((value, snapshot.timestamp_ms))
    request = WriteRequest()
    for labels, points in samples.items():
        series = request.timeseries.add()
        for name, value in labels:
            series.labels.add(name=name, value=value)
        for value, timestamp in points:
            series.samples.add(value=value, timestamp=timestamp)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def decode_write_request(body: bytes) -> dict[LabelSet, list[tuple[int, float]]]:
    """The inverse of `encode_write_request`: series -> [(timestamp_ms, value)] (for receivers)."""
    request = WriteRequest()
    request.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    out: dict[LabelSet, list[tuple[int, float]]] = {}
    for series in request.timeseries:
        labels = tuple((label.name, label.value) for label in series.labels)
        out.setdefault(labels, []).extend((s.timestamp, s.value) for s in series.samples)
    return out


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


class Outcome(Enum):
    """What became of one send: delivered, worth retrying, or refused for good."""

    SENT = "sent"
    RETRY = "retry"
    REJECTED = "rejected"


class RemoteWriteMetrics:
    """The remote-write client's own series, registered in the agent's registry.

    Use `for_registry`: a sink replaced on reload keeps counting in the same series.
    """

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, RemoteWriteMetrics] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> RemoteWriteMetrics:
        """The one instance registered in `registry`, created on first use."""
        if registry not in cls._by_registry:
            cls._by_registry[registry] = cls(registry)
        return cls._by_registry[registry]

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "reachprobe_remote_write_sent_samples",
            "Samples the remote-write receiver accepted.",
            registry=registry,
        )
        self.dropped = Counter(
            "reachprobe_remote_write_dropped_samples",
            "Samples never delivered: buffer_full (oldest dropped) or rejected (HTTP 4xx).",
            ["reason"],
            registry=registry,
        )
        self.failures = Counter(
            "reachprobe_remote_write_failed_sends",
            "Sends that failed and will be retried (connection error, timeout, 5xx, 429).",
            registry=registry,
        )
        self.pending = Gauge(
            "reachprobe_remote_write_pending_samples",
            "Samples buffered, waiting for their first or next send.",
            registry=registry,
        )
        for reason in ("buffer_full", "rejected"):
            self.dropped.labels(reason)


class RemoteWriter:
    """Delivers buffered snapshots to one receiver, oldest first, retrying with backoff."""

    def __init__(self, config: RemoteWriteConfig, metrics: RemoteWriteMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.buffer = SampleBuffer(config.max_buffered_samples)
        self._wakeup = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._failing = False
        self._stopping = False

    def enqueue(self, snapshot: Snapshot) -> None:
        """Queue a snapshot (never blocks); wakes the sender when a full batch is waiting."""
        dropped = self.buffer.push(snapshot)
        if dropped:
            self.metrics.dropped.labels("buffer_full").inc(dropped)
        self.metrics.pending.set(self.buffer.samples)
        if self.buffer.samples >= self.config.max_samples_per_send:
            self._wakeup.set()

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.config.url.startswith("https:"):
            return False
        ca_file = self.config.tls.ca_file
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def _auth_headers(self) -> dict[str, str]:
        # Read on every send, so that a rotated password or token is picked up without reload.
        if self.config.bearer_token_file is not None:
            token = self.config.bearer_token_file.read_text(encoding="utf-8").strip()
            return {"Authorization": f"Bearer {token}"}
        if self.config.basic_auth is not None:
            auth = self.config.basic_auth
            password = auth.password_file.read_text(encoding="utf-8").strip()
            pair = base64.b64encode(f"{auth.username}:{password}".encode()).decode("ascii")
            return {"Authorization": f"Basic {pair}"}
        return {}

    def _session_for(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=1),
            )
        return self._session

    async def send(self, batch: Sequence[Snapshot]) -> Outcome:
        """POST one batch; 2xx is sent, 5xx/429/network errors retry, other 4xx are rejected."""
        try:
            headers = {**HEADERS, **self._auth_headers()}
            body = encode_write_request(batch)
            async with self._session_for().post(
                self.config.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                detail = (await response.content.read(512)).decode("utf-8", "replace").strip()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as exc:
            self._note_failure(f"{type(exc).__name__}: {exc}")
            return Outcome.RETRY
        if 200 <= status < 300:
            if self._failing:
                log.info("remote-write: %s accepts samples again", self.config.url)
            self._failing = False
            return Outcome.SENT
        if status == 429 or status >= 500:
            self._note_failure(f"HTTP {status}: {detail}")
            return Outcome.RETRY
        log.error("remote-write: %s rejected a batch: HTTP %s: %s", self.config.url, status, detail)
        return Outcome.REJECTED

    def _note_failure(self, why: str) -> None:
        self.metrics.failures.inc()
        if not self._failing:
            log.warning("remote-write: sending to %s failed (%s); retrying", self.config.url, why)
        self._failing = True

    async def _deliver(self, backoff: float) -> float:
        """Send batches until the buffer is empty or a send fails; returns the next backoff."""
        while len(self.buffer) and not self._stopping:
            batch = self.buffer.take(self.config.max_samples_per_send)
            samples = sum(len(s) for s in batch)
            try:
                outcome = await self.send(batch)
            except asyncio.CancelledError:
                # Stopped mid-send (shutdown, flush bound): the batch stays for the next try.
                self.buffer.put_back(batch)
                raise
            if outcome is Outcome.SENT:
                self.metrics.sent.inc(samples)
                backoff = 0.0
            elif outcome is Outcome.REJECTED:
                self.metrics.dropped.labels("rejected").inc(samples)
            else:
                dropped = self.buffer.put_back(batch)
                if dropped:
                    self.metrics.dropped.labels("buffer_full").inc(dropped)
                self.metrics.pending.set(self.buffer.samples)
                return min(max(backoff * 2, self.config.min_backoff), self.config.max_backoff)
            self.metrics.pending.set(self.buffer.samples)
        return backoff

    async def run(self) -> None:
        """Send every `interval` (sooner when a full batch waits), backing off after failures."""
        backoff = 0.0
        while not self._stopping:
            wait = backoff or self.config.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            self._wakeup.clear()
            backoff = await self._deliver(backoff)

    def stop(self) -> None:
        """Make `run` return once the send in flight (if any) has finished."""
        self._stopping = True
        self._wakeup.set()

    async def flush(self, timeout: float) -> bool:
        """Try to deliver everything buffered within `timeout` seconds; True if all was sent.

        Call it after `run` has returned: two senders would reorder batches.
        """
        self._stopping = False
        deadline = time.monotonic() + timeout
        backoff = 0.0
        while len(self.buffer):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                backoff = await asyncio.wait_for(self._deliver(backoff), timeout=remaining)
            except TimeoutError:
                return False
            if len(self.buffer):
                await asyncio.sleep(min(backoff, max(deadline - time.monotonic(), 0)))
        return True

    async def aclose(self) -> None:
        """Close the HTTP session (buffered samples are kept in `buffer`)."""
        if self._session is not None:
            await self._session.close()
