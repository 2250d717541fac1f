"""The agent's configuration: pydantic models over a YAML file, unknown keys rejected.

Every error names the file, the key path and the reason, e.g.
`site.yaml: targets[2].url: not an http(s) URL`.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.durations import parse_duration
from agent.resources import shipped_file
from measure.plan import DEFAULT_SEED, DEFAULT_SYN_RATE, MAX_SAMPLE, Method
from probes.blockpages import check_location
from probes.dns import DEFAULT_PORTS, Resolver
from probes.http import DEFAULT_MAX_BODY

DEFAULT_PORT = 9787
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_CONFIG_NAME = "default.yaml"
# libyaml's loader where PyYAML was built with it: parsing 10,000 targets takes 0.27 s instead
# of 1.2 s. The same safe subset of YAML either way.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def _label(value: object) -> object:
    # Label values must stay bounded and safe to print: no spaces, URLs or free text.
    if isinstance(value, str) and not _LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-128 letters, digits, '_', '.', ':' or '-'"
        )
    return value


def _network(value: object) -> object:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        # pydantic would otherwise read the number 1 as the network 0.0.0.1/32.
        raise ValueError(f'{value!r} is not a network in CIDR form (e.g. "198.18.0.0/15")')
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a network in CIDR form: {exc}") from None


def _greater_than_zero(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_greater_than_zero)
]
LabelName = Annotated[str, BeforeValidator(_label)]
Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]


class ConfigError(Exception):
    """A config that cannot be used; `str()` is ready to print, one problem per line."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {p}: {why}" if p else f"{source}: {why}" for p, why in problems]
        super().__init__("\n".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Parse `ip`, `ip:port`, `[v6]:port` or `host:port` into (host, port)."""
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: missing ']' after an IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':port' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r}: a port is required (host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port must be a number from 0 to 65535")
    if not host:
        raise ValueError(f"{text!r}: the host is empty")
    return host, int(port_text)


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    """`value` resolved against the config file's folder; an error if no such file exists."""
    base = (info.context or {}).get("base_dir")
    path = value if value.is_absolute() or base is None else Path(base) / value
    if not path.is_file():
        raise ValueError(f"file {str(path)!r} does not exist")
    return path


ExistingFile = Annotated[Path, AfterValidator(_existing_file)]


class AgentSection(_Strict):
    """Who this vantage is and how it probes."""

    vantage: LabelName = "unnamed"
    role: Literal["test", "control"] = "test"
    country: Annotated[str, Field(pattern=r"^([A-Z]{2})?$")] = ""
    asn: Annotated[str, Field(pattern=r"^(AS\d{1,10})?$")] = ""
    listen: str | None = DEFAULT_LISTEN
    interval: Duration = 60.0
    timeout: Duration = 5.0
    jitter: Duration | None = None
    concurrency: Annotated[int, Field(ge=1, le=4096)] = 64
    max_addresses: Annotated[int, Field(ge=1, le=32)] = 4
    address_limit: Annotated[int, Field(ge=1, le=64)] = 8
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 << 20)] = DEFAULT_MAX_BODY
    # Shared by every vantage whose prefix samples are compared (docs/prefixes.md).
    prefix_seed: Annotated[str, Field(min_length=1, max_length=256)] = DEFAULT_SEED
    # SYNs per second of the prefixes sampled by `method: syn`, all of them together.
    prefix_syn_rate: Annotated[float, Field(gt=0, le=100_000)] = DEFAULT_SYN_RATE
    # Serving beyond loopback needs web_config (TLS and/or basic auth, agent/webconfig.py) or
    # this explicit opt-out; the rule is enforced at start by webconfig.listen_policy.
    web_config: ExistingFile | None = None
    insecure_listen: bool = False

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            host, _ = split_host_port(value)
            _ip(host)
        return value

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        return _greater_than_zero(value)

    @model_validator(mode="after")
    def _limits(self) -> AgentSection:
        if self.address_limit < self.max_addresses:
            raise ValueError(
                f"address_limit ({self.address_limit}) is below max_addresses "
                f"({self.max_addresses}): the first batch alone is larger"
            )
        return self

    @model_validator(mode="after")
    def _timeout_fits(self) -> AgentSection:
        if self.timeout > self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) is longer than interval ({self.interval:g}s)"
            )
        return self

    @property
    def effective_jitter(self) -> float:
        """How far target starts are spread in a cycle: jitter, or a tenth of the interval."""
        return self.jitter if self.jitter is not None else min(self.interval / 10, 30.0)

    @property
    def listen_address(self) -> tuple[str, int] | None:
        return split_host_port(self.listen) if self.listen else None


class ResolverConfig(_Strict):
    """One resolver: `system`, `udp`, `tcp` or `dot` with servers, or `doh` with a URL."""

    type: Literal["system", "udp", "tcp", "dot", "doh"]
    servers: list[str] = []
    url: str | None = None
    server_name: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> ResolverConfig:
        if self.type == "doh":
            if not self.url:
                raise ValueError("a doh resolver needs url (https://host/dns-query)")
            if urlsplit(self.url).scheme != "https" or not urlsplit(self.url).hostname:
                raise ValueError(f"url {self.url!r} is not an https:// URL")
            if self.servers:
                raise ValueError("a doh resolver takes url, not servers")
        elif self.type == "system":
            if self.servers or self.url:
                raise ValueError("the system resolver takes neither servers nor url")
        else:
            if not self.servers:
                raise ValueError(f"a {self.type} resolver needs servers (a list of ip or ip:port)")
            if self.url:
                raise ValueError(f"a {self.type} resolver takes servers, not url")
            for server in self.servers:
                _ip(split_host_port(server, DEFAULT_PORTS[self.type])[0])
        if self.server_name and self.type != "dot":
            raise ValueError("server_name is only for dot resolvers")
        return self

    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """(ip, port) of every configured server."""
        port = DEFAULT_PORTS.get(self.type, 53)
        return tuple(split_host_port(s, port) for s in self.servers)

    def resolver(self) -> Resolver:
        """What the DNS step needs to ask this resolver."""
        return Resolver(self.type, self.endpoints(), self.url, self.server_name)


class ResolversSection(_Strict):
    """The test resolver (what the vantage's users get) and an optional control resolver."""

    test: ResolverConfig = ResolverConfig(type="system")
    control: ResolverConfig | None = None
    bogon_exempt: list[Network] = []
    injection_window: Duration = 0.5


class TlsSection(_Strict):
    """Extra trust anchors for every TLS step, DoH and DoT included."""

    ca_file: ExistingFile | None = None


class BasicAuthSection(_Strict):
    """HTTP basic auth for remote-write; the password is read from a file, never inline."""

    username: str
    password_file: ExistingFile


class RemoteWriteTlsSection(_Strict):
    """Trust for the remote-write receiver: `ca_file` replaces the system store when set."""

    ca_file: ExistingFile | None = None


class RemoteWriteConfig(_Strict):
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


class VantageSection(_Strict):
    """The vantage's own health checks, each cycle. Off unless set (the shipped default
    config sets them): they contact addresses of their own."""

    canary_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "canary"
    # An address that must never answer (RFC 5737 documentation space in the shipped config):
    # if a connection to it succeeds, a middlebox accepts everything.
    tcp_canary: str | None = None
    # A domain under which a random name cannot exist: an address back means the test
    # resolver rewrites NXDOMAIN.
    nxdomain_probe_suffix: str | None = None

    @field_validator("tcp_canary")
    @classmethod
    def _tcp_canary(cls, value: str | None) -> str | None:
        if value is not None:
            _ip(split_host_port(value)[0])
        return value

    @field_validator("nxdomain_probe_suffix")
    @classmethod
    def _suffix(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?", value):
            raise ValueError(f"{value!r} is not a domain name")
        return value


class ExchangeConfig(_Strict):
    """A send/expect exchange over a `tcp:` or `host:` target's connection."""

    send: str = ""
    expect: str | None = None
    max_reply: Annotated[int, Field(ge=1, le=65536)] = 4096

    @field_validator("expect")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value.encode())
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class MeasurementLogSection(_Strict):
    """The opt-in measurement log (docs/measurement-log.md): one JSON line per target per
    cycle in `path`, rotated when it would grow past `max_bytes`, keeping `backups` old files."""

    path: Path
    max_bytes: Annotated[int, Field(ge=4096)] = 10 << 20
    backups: Annotated[int, Field(ge=0, le=100)] = 5

    @field_validator("path")
    @classmethod
    def _directory(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        path = value if value.is_absolute() or base is None else Path(base) / value
        if not path.parent.is_dir():
            raise ValueError(f"directory {str(path.parent)!r} does not exist")
        if path.is_dir():
            raise ValueError(f"{str(path)!r} is a directory; give a file name")
        return path


class TargetConfig(_Strict):
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
            _ip(split_host_port(value)[0])
        return value

    @field_validator("expect_body")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
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
        if self.exchange is not None and (self.url is not None or self.tls):
            raise ValueError("exchange goes with a tcp: target or a host without tls")
        return self


class BlockpageConfig(_Strict):
    """A blockpage fingerprint: a regex over the status line, headers and body."""

    name: LabelName
    pattern: str
    location: str = "any"
    country: str | None = None
    source: str | None = None

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        return check_location(value)


class PrefixConfig(_Strict):
    """A prefix whose reachable fraction is estimated from a fresh sample every cycle."""

    name: LabelName
    cidr: Network
    port: Annotated[int, Field(ge=1, le=65535)] = 443
    sample: Annotated[int, Field(ge=1, le=MAX_SAMPLE)] = 16
    # `syn`: a stateless SYN scan, off by default; needs CAP_NET_RAW (docs/prefixes.md).
    method: Method = "connect"


class RawSection(_Strict):
    """Raw-packet probes (docs/raw.md): off unless the volunteer opts in; need CAP_NET_RAW.

    Rates are probe packets per second, per target address and for the whole agent.
    """

    enabled: bool = False
    trace: bool = True  # localize the censor for targets that are not reachable
    fingerprint: bool = True  # injected or genuine, for resets and injected DNS answers
    icmp_echo: bool = False  # an ICMP echo step for `tcp:` targets
    rate_per_second: Annotated[float, Field(gt=0, le=100)] = 5.0
    global_rate_per_second: Annotated[float, Field(gt=0, le=1000)] = 20.0
    max_ttl: Annotated[int, Field(ge=1, le=64)] = 16
    repeats: Annotated[int, Field(ge=1, le=10)] = 3
    timeout: Duration = 2.0
    control_sni: str = "www.example.org"
    control_host: str = "www.example.org"

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if not 0 < value <= 30:
            raise ValueError("must be more than 0s and at most 30s")
        return value


class Config(_Strict):
    """The whole agent config."""

    agent: AgentSection = AgentSection()
    resolvers: ResolversSection = ResolversSection()
    tls: TlsSection = TlsSection()
    vantage: VantageSection = VantageSection()
    measurement_log: MeasurementLogSection | None = None
    targets: list[TargetConfig] = []
    blockpages: list[BlockpageConfig] = []
    prefixes: list[PrefixConfig] = []
    remote_write: RemoteWriteConfig | None = None
    raw: RawSection = RawSection()

    @field_validator("targets", "prefixes")
    @classmethod
    def _unique(
        cls, value: list[TargetConfig] | list[PrefixConfig], info: ValidationInfo
    ) -> list[TargetConfig] | list[PrefixConfig]:
        seen: set[str] = set()
        for item in value:
            if item.name in seen:
                raise ValueError(
                    f"two {info.field_name} are named {item.name!r}; names must be unique"
                )
            seen.add(item.name)
        return value

    @model_validator(mode="before")
    @classmethod
    def _push_instance(cls, data: Any) -> Any:
        # A pushing agent's `instance` label is its vantage name unless set: never an address.
        push = data.get("remote_write") if isinstance(data, dict) else None
        if isinstance(push, dict) and "instance" not in push:
            agent = data.get("agent")
            vantage = agent.get("vantage") if isinstance(agent, dict) else None
            data = {**data, "remote_write": {**push, "instance": vantage or AgentSection().vantage}}
        return data


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith(("function-", "constrained-")) and part not in (
            "list[...]",
            "IPv4Network",
            "IPv6Network",
            "int",
        ):
            out += f".{part}" if out else part
    return out


def _reason(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    return str(err["msg"]).removeprefix("Value error, ")


def parse_config(data: Any, source: str, base_dir: Path | None = None) -> Config:
    """Validate already-loaded YAML data; raises ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [("", "the top level must be a mapping of sections")])
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors():
            item = (_path(err["loc"]), _reason(err))
            if item not in problems:
                problems.append(item)
        raise ConfigError(source, problems) from None


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a config file, or the built-in default when `path` is None."""
    file = Path(path) if path is not None else shipped_file(DEFAULT_CONFIG_NAME)
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [("", "not UTF-8 text")]) from None
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [("", f"invalid YAML: {where}{problem}")]) from None
    return parse_config(data, source, file.parent)
