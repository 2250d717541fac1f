"""`targets`: what to probe, and the send/expect exchanges over a target's connection."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from agent.config.types import LabelName, Strict, check_ip, check_regex, split_host_port


class ExchangeConfig(Strict):
    """A send/expect exchange over a `tcp:` or `host:` target's connection."""

    send: str = ""
    expect: str | None = None
    max_reply: Annotated[int, Field(ge=1, le=65536)] = 4096

    @field_validator("expect")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            # Matched against the reply's bytes.
            check_regex(value.encode())
        return value


# `min_bytes`: read at least this many body bytes (`true`: probes.http.DEFAULT_VOLUME_BYTES),
# for a large object where a data-volume freeze is suspected (docs/taxonomy.md).
MinBytes = Literal[True] | Annotated[int, Field(ge=1, le=64 << 20)]


class VolumeOptions(Strict):
    """The volume probe's options, on a target or as its group's default."""

    min_bytes: MinBytes | None = None
    # Ask for the first `min_bytes` bytes with a Range header (a large file need not be
    # sent whole); a server that ignores it sends the object, read as far as `min_bytes`.
    range: bool = False

    @model_validator(mode="after")
    def _range_needs_size(self) -> VolumeOptions:
        if self.range and self.min_bytes is None:
            raise ValueError("range needs min_bytes (how many bytes to ask for)")
        return self


class TargetConfig(VolumeOptions):
    """What to probe: a URL (dns, tcp, tls, http), a host and port, or a fixed ip:port."""

    name: LabelName
    url: str | None = None
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    tls: bool | None = None
    tcp: str | None = None
    group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{0,64}$")] = ""
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = []
    expect_body: str | None = None
    # `mtproto` proves a Telegram data centre answers; or a send/expect pair.
    exchange: Literal["mtproto"] | ExchangeConfig | None = None
    # A QUIC handshake and an HTTP/3 GET beside the chain (https URLs; docs/taxonomy.md).
    http3: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{value!r} is not an http(s)://host/... URL")
            try:
                parts.port  # noqa: B018 - urlsplit validates the port lazily
            except ValueError as exc:
                raise ValueError(f"{value!r}: {exc}") from None
        return value

    @field_validator("tcp")
    @classmethod
    def _tcp(cls, value: str | None) -> str | None:
        if value is not None:
            check_ip(split_host_port(value)[0])
        return value

    @field_validator("expect_body")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            check_regex(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> TargetConfig:
        kinds = [k for k in ("url", "host", "tcp") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a target needs exactly one of url, host (with port) or tcp")
        if self.host is not None and self.port is None:
            raise ValueError("a host target needs port")
        if self.host is None and (self.port is not None or self.tls is not None):
            raise ValueError("port and tls go with host (a url carries its own)")
        if self.url is None and (self.expect_status or self.expect_body):
            raise ValueError("expect_status and expect_body need a url target")
        if self.url is None and self.min_bytes is not None:
            raise ValueError("min_bytes needs a url target")
        if self.exchange is not None and (self.url is not None or self.tls):
            raise ValueError("exchange goes with a tcp: target or a host without tls")
        if self.http3 and (self.url is None or urlsplit(self.url).scheme != "https"):
            raise ValueError("http3 goes with an https:// url target")
        return self
