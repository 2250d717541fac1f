"""One target's cycle as an OONI measurement (docs/measurement-log.md is the schema).

A URL target is a `web_connectivity` measurement and any other target a `urlgetter` one, so
that OONI's tools (the `oonidata` package's `load_measurement`) pick the model whose test keys
they are: `queries` (ooni/spec df-002-dnst), `tcp_connect` (df-005), `tls_handshakes`
(df-006) and `requests` (df-001), with per-operation `t0`/`t`. What OONI has no field for
(the agent's own verdict, every step as `check` prints it) keeps reachprobe's own names beside
them; OONI's loaders skip keys they do not know.
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from agent import __version__
from agent.config import AgentSection
from measure.report import CycleReport, TargetReport
from measure.verdict import OONI_BLOCKING, Verdict, first_failure
from probes.http import request_headers
from probes.results import DnsFacts, DnsQuery, HttpFacts, StepResult, TlsFacts
from probes.taxonomy import SKIPPED, Code, Step

DATA_FORMAT_VERSION = "0.2.0"
SCHEMA = "reachprobe-measurement/2"
# OONI's base format (df-000) asks for the probe's address or, to keep it private, this.
PRIVATE_PROBE_IP = "127.0.0.1"
# The data formats of ooni/spec the test keys follow (df-000's `extensions`).
EXTENSIONS = {"dnst": 0, "tcpconnect": 0, "tlshandshake": 0, "httpt": 0}
# A response that arrived but was not the site's own is web_connectivity's "http-diff".
HTTP_DIFF = frozenset({Code.HTTP_BLOCKPAGE, Code.HTTP_BODY_MISMATCH, Code.HTTP_STATUS_MISMATCH})
# urlgetter's `failed_operation` by the step that failed (OONI's operation names; OONI has
# none for a protocol exchange after the connection, so it keeps the step's name).
FAILED_OPERATIONS: dict[Step, str] = {
    Step.DNS: "resolve",
    Step.TCP: "connect",
    Step.EXCHANGE: "exchange",
    Step.TLS: "tls_handshake",
    Step.HTTP: "http_transaction",
}
# urlgetter's input scheme by the target's scheme (non-URL targets).
URLGETTER_SCHEMES = {"tls": "tlshandshake", "tcp": "tcpconnect"}
# The DNS code a control resolver's comparison gives: web_connectivity's dns_consistency.
INCONSISTENT_DNS = frozenset({Code.DNS_INCONSISTENT, Code.DNS_BOGON, Code.DNS_INJECTED})
DNS_NO_ANSWER = "dns_no_answer"
# df-000's `platform` annotation by Python's sys.platform.
PLATFORMS = {"linux": "linux", "darwin": "macos", "win32": "windows"}


def ooni_time(at: float) -> str:
    """OONI's timestamp format: UTC, `YYYY-mm-dd HH:MM:SS`."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def report_id(started_at: float, asn: str, token: str) -> str:
    """A report id in OONI's shape (`YYYYmmddTHHMMSSZ_ASN_token`): one per cycle, since a
    cycle is the agent's set of related measurements."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started_at))}_{asn}_{token}"


class _Clock:
    """Turns a step's monotonic start into OONI's `t0`/`t`: seconds since the measurement's
    first step, which is `measurement_start_time`."""

    def __init__(self, steps: Sequence[StepResult], fallback: float) -> None:
        starts = [s.started for s in steps if s.started is not None]
        self.base = min(starts) if starts else None
        # Wall time of the first step: the monotonic offset read now (the cycle just ended).
        offset = time.time() - time.perf_counter()
        self.wall = fallback if self.base is None else self.base + offset

    def times(self, step: StepResult) -> dict[str, float | None]:
        if self.base is None or step.started is None:
            return {"t0": None, "t": None}
        t0 = step.started - self.base
        return {"t0": round(t0, 6), "t": round(t0 + step.duration_seconds, 6)}


def _split(endpoint: str | None) -> tuple[str | None, int | None]:
    if not endpoint:
        return None, None
    host, _, port = endpoint.rpartition(":")
    if not port.isdigit():
        return endpoint, None
    return host.strip("[]"), int(port)


def _answer(address: str, ttl: int | None) -> dict[str, Any]:
    v6 = ":" in address
    return {"answer_type": "AAAA" if v6 else "A", ("ipv6" if v6 else "ipv4"): address, "ttl": ttl}


def _answers(query: DnsQuery, facts: DnsFacts | None) -> list[dict[str, Any]]:
    if query.records:
        return [_answer(r.address, r.ttl) for r in query.records]
    if facts is not None and not facts.queries:  # no per-query detail: TTLs unknown
        v6 = query.qtype == "AAAA"
        return [_answer(a, None) for a in facts.addresses if (":" in a) == v6]
    return []


def _queries(step: StepResult, hostname: str, clock: _Clock) -> list[dict[str, Any]]:
    """The DNS step as df-002 queries: one per query type the step asked."""
    facts = step.facts if isinstance(step.facts, DnsFacts) else None
    asked = facts.queries if facts and facts.queries else (DnsQuery("A"), DnsQuery("AAAA"))
    system = facts is not None and facts.resolver == "system"
    out = []
    for query in asked:
        answers = _answers(query, facts)
        failure = step.ooni_failure
        if failure is None and not answers:
            failure = DNS_NO_ANSWER  # the other query type gave the addresses
        out.append(
            {
                "hostname": hostname,
                "query_type": query.qtype,
                # The system resolver is the one of /etc/resolv.conf, asked over UDP.
                "engine": "udp" if system else (facts.resolver if facts else "unknown"),
                "resolver_address": query.server or "",
                "failure": failure,
                "rcode": query.rcode,
                "answers": answers,
                **({"tags": ["system_resolver"]} if system else {}),
                **clock.times(step),
                "duration_seconds": round(step.duration_seconds, 6),
            }
        )
    return out


def _tcp(step: StepResult, clock: _Clock) -> dict[str, Any]:
    ip, port = _split(step.address)
    return {
        "ip": ip,
        "port": port,
        "status": {"success": step.ok, "failure": step.ooni_failure},
        **clock.times(step),
        "duration_seconds": round(step.duration_seconds, 6),
    }


def _tls(step: StepResult, server_name: str | None, clock: _Clock) -> dict[str, Any]:
    facts = step.facts if isinstance(step.facts, TlsFacts) else None
    certificates = []
    if facts is not None and facts.certificate:
        data = base64.b64encode(facts.certificate).decode("ascii")
        certificates.append({"format": "base64", "data": data})
    return {
        "network": "tcp",
        "address": step.address,
        "server_name": server_name,
        "failure": step.ooni_failure,
        # df-006 has strings here: empty when the handshake did not get that far.
        "tls_version": (facts.version if facts else None) or "",
        "cipher_suite": (facts.cipher if facts else None) or "",
        "negotiated_protocol": (facts.alpn if facts else None) or "",
        # The agent always validates the chain (a failure is the step's code).
        "no_tls_verify": False,
        "peer_certificates": certificates,
        **clock.times(step),
        "duration_seconds": round(step.duration_seconds, 6),
    }


def _headers(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """df-001's two header shapes: the first value per name, and every pair in order."""
    first: dict[str, str] = {}
    for name, value in pairs:
        first.setdefault(name, value)
    return {"headers": first, "headers_list": [[n, v] for n, v in pairs]}


def _request(step: StepResult, url: str, clock: _Clock) -> dict[str, Any]:
    facts = step.facts if isinstance(step.facts, HttpFacts) else None
    # The last hop is the one whose answer the step judged (earlier hops: steps[].data).
    last = facts.redirects[-1] if facts and facts.redirects else url
    response = None
    if facts is not None:
        response = {
            "code": facts.status,
            "body": facts.body,
            "body_is_truncated": facts.truncated or len(facts.body) < facts.body_bytes,
            "body_length": facts.body_bytes,
            **_headers(facts.headers),
        }
    return {
        "network": "tcp",
        "address": step.address,
        "failure": step.ooni_failure,
        "request": {
            "url": last,
            "method": "GET",
            "body": "",
            "body_is_truncated": False,
            **_headers(request_headers(urlsplit(last).netloc)),
            "tor": {"is_tor": False, "exit_ip": None, "exit_name": None},
            "x_transport": "tcp",
        },
        "response": response,
        **clock.times(step),
        "duration_seconds": round(step.duration_seconds, 6),
    }


def _input(report: TargetReport) -> str:
    target = report.target
    if target.http is not None:
        return target.http.url
    scheme = URLGETTER_SCHEMES.get(target.scheme, target.scheme)
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{scheme}://{host}:{target.port}"


def _blocking(report: TargetReport, http: Sequence[StepResult]) -> str | bool | None:
    blocking = OONI_BLOCKING[report.verdict]
    if report.verdict == Verdict.HTTP_BLOCKING and {s.result for s in http} & HTTP_DIFF:
        return "http-diff"
    return blocking


def _web_connectivity(report: TargetReport) -> dict[str, Any]:
    """web_connectivity's own analysis keys, from the deciding steps (no OONI test helper:
    the control, when configured, is the control resolver's answer)."""
    dns, control = report.dns, report.control
    connection = [s for s in report.deciding_steps if s.step != Step.DNS]
    failure = first_failure(connection)
    keys: dict[str, Any] = {
        "dns_experiment_failure": dns.ooni_failure if dns is not None else None,
        # web_connectivity's HTTP experiment includes its connect and TLS handshake.
        "http_experiment_failure": failure.ooni_failure if failure is not None else None,
        "control_failure": None,
        "dns_consistency": None,
    }
    if dns is not None and dns.result in INCONSISTENT_DNS:
        keys["dns_consistency"] = "inconsistent"
    if control is not None:
        facts = control.facts if isinstance(control.facts, DnsFacts) else None
        keys["control"] = {
            "dns": {
                "failure": control.ooni_failure,
                "addrs": list(facts.addresses) if facts else [],
            }
        }
        keys["control_failure"] = control.ooni_failure
        if dns is not None and dns.ok and control.ok:
            keys["dns_consistency"] = "consistent"
    return keys


def _urlgetter(report: TargetReport) -> dict[str, Any]:
    failure = first_failure(report.deciding_steps)
    if failure is None:
        return {"failure": None, "failed_operation": None}
    operation = FAILED_OPERATIONS.get(failure.step, failure.step.value)
    return {"failure": failure.ooni_failure, "failed_operation": operation}


def _test_helpers(report: TargetReport) -> dict[str, Any]:
    """df-000's test helpers: the control resolver, when one was asked."""
    control = report.control
    facts = control.facts if control is not None and isinstance(control.facts, DnsFacts) else None
    if facts is None:
        return {}
    servers = [q.server for q in facts.queries if q.server]
    return {"control_resolver": {"address": servers[0] if servers else "", "type": facts.resolver}}


def record(
    agent: AgentSection, cycle: CycleReport, report: TargetReport, token: str = "reachprobe"
) -> dict[str, Any]:
    """The measurement log record of one target in one cycle (docs/measurement-log.md);
    `token` ends the report id (the sink draws one per run)."""
    target = report.target
    ran = [s for s in report.steps if s.result != SKIPPED]
    by_step = {step: [s for s in ran if s.step == step] for step in Step}
    clock = _Clock(ran, cycle.started_at)
    url_target = target.http is not None
    accessible_blocking = _blocking(report, by_step[Step.HTTP])
    asn = agent.asn or "AS0"
    ooni_keys = _web_connectivity(report) if url_target else _urlgetter(report)
    return {
        "schema": SCHEMA,
        "data_format_version": DATA_FORMAT_VERSION,
        "software_name": "reachprobe",
        "software_version": __version__,
        "test_name": "web_connectivity" if url_target else "urlgetter",
        "test_version": __version__,
        "report_id": report_id(cycle.started_at, asn, token),
        "test_start_time": ooni_time(cycle.started_at),
        "measurement_start_time": ooni_time(clock.wall),
        "test_runtime": round(sum(s.duration_seconds for s in ran), 6),
        "input": _input(report),
        "probe_ip": PRIVATE_PROBE_IP,
        "probe_cc": agent.country or "ZZ",
        "probe_asn": asn,
        "test_helpers": _test_helpers(report),
        "extensions": EXTENSIONS,
        "annotations": {
            "vantage": agent.vantage,
            "role": agent.role,
            "cycle": str(cycle.number),
            "engine_name": "reachprobe",
            "engine_version": __version__,
            "platform": PLATFORMS.get(sys.platform, sys.platform),
        },
        "test_keys": {
            "target": target.name,
            "group": target.group or None,
            "verdict": report.verdict.value,
            "accessible": None if accessible_blocking is None else accessible_blocking is False,
            "blocking": accessible_blocking,
            **ooni_keys,
            "queries": [q for s in by_step[Step.DNS] for q in _queries(s, target.host, clock)],
            "tcp_connect": [_tcp(s, clock) for s in by_step[Step.TCP]],
            "tls_handshakes": [_tls(s, target.sni, clock) for s in by_step[Step.TLS]],
            "requests": [_request(s, _input(report), clock) for s in by_step[Step.HTTP]],
            "steps": [s.to_json() for s in report.steps],
            **({"error": report.error} if report.error is not None else {}),
        },
    }
