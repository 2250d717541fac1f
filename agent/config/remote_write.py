"""`remote_write`: push mode (Prometheus remote-write 1.0), its receiver and its buffer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import ByteSize, Field, ValidationInfo, field_validator, model_validator

from agent.config.types import (
    ExistingFile,
    LabelName,
    PositiveDuration,
    Strict,
    relative_to_config,
)


class BasicAuthSection(Strict):
    """HTTP basic auth for remote-write; the password is read from a file, never inline."""

    username: str
    password_file: ExistingFile


class RemoteWriteTlsSection(Strict):
    """Trust for the remote-write receiver: `ca_file` replaces the system store when set."""

    ca_file: ExistingFile | None = None


class RemoteWriteQueueSection(Strict):
    """The disk-backed queue (docs/reliability.md): snapshots written to segment files in
    `path` before they are sent, so that a restart or a crash loses none. Without a `path`,
    `$STATE_DIRECTORY/remote-write` is used when that variable is set (systemd's
    `StateDirectory=` and the container image set it); otherwise the queue is in memory only,
    bounded by `max_buffered_samples`. `disk: false` keeps it in memory regardless."""

    disk: bool = True
    path: Path | None = None
    # Oldest segments dropped (and counted) beyond either bound.
    max_bytes: Annotated[ByteSize, Field(ge=64 << 10)] = ByteSize(256 << 20)
    max_age: PositiveDuration = 86400.0

    @field_validator("path")
    @classmethod
    def _relative(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else relative_to_config(value, info)

    def directory(self) -> Path | None:
        """Where the segments go, or None for a memory-only queue."""
        if not self.disk:
            return None
        if self.path is not None:
            return self.path
        state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(state) / "remote-write" if state else None


class RemoteWriteConfig(Strict):
    """Push mode: Prometheus remote-write 1.0 to a receiver (README: `remote_write`)."""

    url: str
    interval: PositiveDuration = 15.0
    timeout: PositiveDuration = 10.0
    basic_auth: BasicAuthSection | None = None
    bearer_token_file: ExistingFile | None = None
    tls: RemoteWriteTlsSection = RemoteWriteTlsSection()
    job: LabelName = "reachprobe"
    instance: LabelName = "unnamed"
    max_buffered_samples: Annotated[int, Field(ge=1000, le=100_000_000)] = 2_000_000
    max_samples_per_send: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000
    min_backoff: PositiveDuration = 1.0
    max_backoff: PositiveDuration = 60.0
    queue: RemoteWriteQueueSection = RemoteWriteQueueSection()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s)://host/... URL")
        if parts.username or parts.password:
            raise ValueError("put credentials in basic_auth or bearer_token_file, not the URL")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RemoteWriteConfig:
        if self.basic_auth is not None and self.bearer_token_file is not None:
            raise ValueError("set basic_auth or bearer_token_file, not both")
        if self.min_backoff > self.max_backoff:
            raise ValueError("min_backoff is longer than max_backoff")
        return self
