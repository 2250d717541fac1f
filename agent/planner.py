"""Turns a validated config into the measurement layer's immutable plan, once per load.

Everything that is parsed (URLs, host:port, regexes, the shipped fingerprints) is parsed here,
so the measurement code never sees a pydantic model.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlsplit

import yaml

from agent.config import (
    BlockpageConfig,
    Config,
    ExchangeConfig,
    TargetConfig,
    VantageSection,
    split_host_port,
)
from agent.fingerprint_db import (
    DNS_FILE,
    HTTP_FILE,
    OONI_DNS_CSV,
    OONI_HTTP_CSV,
    load_dns,
    load_http,
    read_ooni_dns,
    read_ooni_http,
)
from agent.resources import optional_shipped_file, shipped_file
from measure.plan import HttpPlan, Prefix, ProbePlan, RawPlan, TargetPlan, VantagePlan
from probes.blockpages import Fingerprint
from probes.dns_fingerprints import DnsFingerprint
from probes.exchange import MTPROTO, Exchange
from probes.http import SCHEME_PORTS

log = logging.getLogger("reachprobe")
# How much of each page's decoded body the measurement log keeps (docs/measurement-log.md):
# enough for a blockpage; the whole page would cost memory for every target.
LOG_BODY_SAMPLE = 4096


@functools.cache
def shipped_blockpages() -> tuple[BlockpageConfig, ...]:
    """The blockpage fingerprints shipped with the agent (config/blockpages.yaml)."""
    shipped = yaml.safe_load(shipped_file("blockpages.yaml").read_text("utf-8")) or []
    return tuple(BlockpageConfig.model_validate(e) for e in shipped)


@functools.cache
def shipped_http_database() -> tuple[Fingerprint, ...]:
    """OONI's HTTP fingerprints as `scripts/refresh-fingerprints` wrote them, if installed."""
    path = optional_shipped_file(HTTP_FILE)
    return tuple(load_http(path)) if path is not None else ()


@functools.cache
def shipped_dns_fingerprints() -> tuple[DnsFingerprint, ...]:
    """OONI's DNS fingerprints as `scripts/refresh-fingerprints` wrote them, if installed."""
    path = optional_shipped_file(DNS_FILE)
    return tuple(load_dns(path)) if path is not None else ()


def fingerprints(
    extra: Sequence[BlockpageConfig] = (), database: Sequence[Fingerprint] | None = None
) -> tuple[Fingerprint, ...]:
    """The fingerprint database (`database`, else the installed one), the hand-written
    entries it lacks, and the config's own. A hand-written entry citing a database fingerprint
    gives way to OONI's exact rule."""
    database = tuple(shipped_http_database() if database is None else database)
    names = {fp.name for fp in database}
    own = [e for e in shipped_blockpages() if e.source not in names]
    return database + tuple(
        Fingerprint(
            name=e.name,
            pattern=e.pattern,
            location=e.location,
            pattern_type=e.pattern_type,
            country=e.country,
            source=e.source,
            false_positive=e.false_positive,
        )
        for e in (*own, *extra)
    )


def plan_fingerprints(config: Config) -> tuple[tuple[Fingerprint, ...], tuple[DnsFingerprint, ...]]:
    """The HTTP and DNS fingerprints a config asks for: from its `fingerprints.ooni` folder,
    else the installed database, plus the hand-written and the config's own HTTP ones."""
    if config.fingerprints is None:
        return fingerprints(config.blockpages), shipped_dns_fingerprints()
    folder = config.fingerprints.ooni
    http = read_ooni_http(folder / OONI_HTTP_CSV)
    return fingerprints(config.blockpages, http), tuple(read_ooni_dns(folder / OONI_DNS_CSV))


def plan_exchange(config: Literal["mtproto"] | ExchangeConfig | None) -> Exchange | None:
    """A target's application exchange, if it has one."""
    if config is None:
        return None
    if config == "mtproto":
        return MTPROTO
    assert isinstance(config, ExchangeConfig)
    expect = re.compile(config.expect.encode()) if config.expect is not None else None
    return Exchange("bytes", config.send.encode(), expect, config.max_reply)


def plan_vantage(section: VantageSection) -> VantagePlan:
    """Which vantage checks run, parsed."""
    canary = split_host_port(section.tcp_canary) if section.tcp_canary else None
    return VantagePlan(section.canary_group, canary, section.nxdomain_probe_suffix)


def plan_target(target: TargetConfig) -> TargetPlan:
    """One target's plan: scheme, host, port and HTTP expectations, parsed once."""
    group = target.group
    if target.url is not None:
        parts = urlsplit(target.url)
        http = HttpPlan(
            url=target.url,
            parts=parts,
            expect_status=tuple(target.expect_status),
            expect_body=re.compile(target.expect_body) if target.expect_body else None,
        )
        port = parts.port or SCHEME_PORTS[parts.scheme]
        return TargetPlan(target.name, group, parts.scheme, parts.hostname or "", port, http)
    exchange = plan_exchange(target.exchange)
    if target.host is not None and target.port is not None:
        scheme = "tls" if target.tls else "tcp"
        return TargetPlan(target.name, group, scheme, target.host, target.port, None, exchange)
    host, port = split_host_port(target.tcp or "")
    return TargetPlan(target.name, group, "tcp", host, port, None, exchange)


def plan_raw(config: Config, forced_trace: bool) -> RawPlan | None:
    """The raw follow-ups, when the config opts in or `check --trace` asks (None: no scapy)."""
    section = config.raw
    if not (section.enabled or forced_trace):
        return None
    from probes.raw import RawOptions  # scapy loads only for an agent that uses it

    fields = set(RawOptions.__dataclass_fields__)
    options = RawOptions(**section.model_dump(include=fields))
    test = config.resolvers.test
    udp = test.endpoints()[0] if test.type == "udp" and test.servers else None
    return RawPlan(
        options,
        trace=section.trace or forced_trace,
        fingerprint=section.enabled and section.fingerprint,
        forced=forced_trace,
        echo=section.enabled and section.icmp_echo,
        resolver=udp,
        window=config.resolvers.injection_window,
    )


def plan_prefixes(config: Config) -> tuple[Prefix, ...]:
    """The prefixes to sample. Without CAP_NET_RAW a `method: syn` prefix falls back to
    connects, with a warning: the agent keeps measuring, and each result says its method."""
    wanted = [p for p in config.prefixes if p.method == "syn"]
    syn_ok = bool(wanted) and syn_scan_allowed()
    if wanted and not syn_ok:
        log.warning(
            "prefixes %s: method syn needs CAP_NET_RAW (docs/raw.md); sampling them by TCP "
            "connect instead",
            ", ".join(p.name for p in wanted),
        )
    return tuple(
        Prefix(
            p.name, p.cidr, p.port, p.sample, "syn" if p.method == "syn" and syn_ok else "connect"
        )
        for p in config.prefixes
    )


def syn_scan_allowed() -> bool:
    """True if this process may send raw SYNs (CAP_NET_RAW)."""
    from probes.raw.capability import has_cap_net_raw  # scapy loads only when asked for

    return has_cap_net_raw()


def make_plan(config: Config, *, forced_trace: bool = False) -> ProbePlan:
    """The whole measurement plan of a config (`forced_trace`: trace every target)."""
    agent, resolvers = config.agent, config.resolvers
    control = resolvers.control
    http_fingerprints, dns_fingerprints = plan_fingerprints(config)
    return ProbePlan(
        targets=tuple(plan_target(t) for t in config.targets),
        test_resolver=resolvers.test.resolver(),
        control_resolver=control.resolver() if control is not None else None,
        timeout=agent.timeout,
        concurrency=agent.concurrency,
        max_addresses=agent.max_addresses,
        address_limit=agent.address_limit,
        max_body_bytes=agent.max_body_bytes,
        # Every target's latest report stays in memory: keep bodies only for the log.
        body_sample=LOG_BODY_SAMPLE if config.measurement_log is not None else 0,
        injection_window=resolvers.injection_window,
        bogon_exempt=tuple(resolvers.bogon_exempt),
        ca_file=str(config.tls.ca_file) if config.tls.ca_file else None,
        fingerprints=http_fingerprints,
        dns_fingerprints=dns_fingerprints,
        jitter=agent.effective_jitter,
        vantage=plan_vantage(config.vantage),
        prefixes=plan_prefixes(config),
        prefix_seed=agent.prefix_seed,
        prefix_syn_rate=agent.prefix_syn_rate,
        interval=agent.interval,
        raw=plan_raw(config, forced_trace),
    )
