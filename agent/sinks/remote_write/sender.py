"""The sender: delivers buffered snapshots to one receiver, oldest first, with auth from files,
a CA file, timeouts and exponential backoff; `flush` empties the buffer within a bound."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections.abc import Sequence
from enum import Enum
from typing import Any

import aiohttp

from agent.config import RemoteWriteConfig
from agent.sinks.remote_write.buffer import Queue, SampleBuffer
from agent.sinks.remote_write.metrics import RemoteWriteMetrics
from agent.sinks.remote_write.snapshot import Snapshot
from agent.sinks.remote_write.wire import HEADERS

log = logging.getLogger("reachprobe")


class Outcome(Enum):
    """What became of one send: delivered, worth retrying, or refused for good."""

    SENT = "sent"
    RETRY = "retry"
    REJECTED = "rejected"


class RemoteWriter:
    """Delivers buffered snapshots to one receiver, oldest first, retrying with backoff."""

    def __init__(
        self, config: RemoteWriteConfig, metrics: RemoteWriteMetrics, queue: Queue | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.buffer: Queue = (
            queue if queue is not None else SampleBuffer(config.max_buffered_samples)
        )
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

    async def send(self, batch: Sequence[Any]) -> Outcome:
        """POST one batch; 2xx is sent, 5xx/429/network errors retry, other 4xx are rejected."""
        try:
            headers = {**HEADERS, **self._auth_headers()}
            body = self.buffer.encode(batch)
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
                self.buffer.ack(batch)
                self.metrics.sent.inc(samples)
                backoff = 0.0
            elif outcome is Outcome.REJECTED:
                self.buffer.ack(batch)  # refused for good: never sent again
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
        """Close the HTTP session and the queue (what is queued on disk stays there)."""
        if self._session is not None:
            await self._session.close()
        self.buffer.close()
