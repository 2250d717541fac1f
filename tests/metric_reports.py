"""A fixed set of reports for the metric tests: every per-target series kind, a counter that
grows over two cycles, a step that stops running, an address family tried then not."""

from __future__ import annotations

from agent.config import Config, parse_config
from agent.planner import make_plan
from measure.plan import ProbePlan
from measure.report import CycleReport, TargetReport
from measure.vantage import VantageHealth
from measure.verdict import Verdict
from probes.results import DnsFacts, HttpFacts, StepResult
from probes.taxonomy import Code, Step

CONFIG: Config = parse_config(
    {
        "targets": [
            {"name": "site", "url": "https://site.example/", "group": "news"},
            {"name": "plain", "url": "http://plain.example:8080/"},
            {"name": "raw-tcp", "tcp": "192.0.2.1:443"},
        ]
    },
    "t.yaml",
)
PLAN: ProbePlan = make_plan(CONFIG)
V4, V6, TCP = "192.0.2.7:443", "[2001:db8::7]:443", "192.0.2.1:443"


def _step(
    step: Step, code: str, seconds: float, at: str | None = None, **facts: object
) -> StepResult:
    return StepResult(step, Code(code), at, seconds, facts=facts.get("facts"))  # type: ignore[arg-type]


def cycles() -> list[CycleReport]:
    """Two cycles: all well, then a TLS reset, a DNS failure and a TCP timeout."""
    site, plain, tcp = PLAN.targets
    dns = _step(Step.DNS, "ok", 0.01, facts=DnsFacts("udp", ("192.0.2.7", "192.0.2.8")))
    page = HttpFacts(status=200, body_bytes=1000, bytes_per_second=2500.0)
    first = (
        TargetReport(site, Verdict.REACHABLE, dns=dns, control=dns, chains=((
            _step(Step.TCP, "ok", 0.02, V4), _step(Step.TLS, "ok", 0.03, V4),
            _step(Step.HTTP, "ok", 0.04, V4, facts=page)), (
            _step(Step.TCP, "tcp_timeout", 2, V6), _step(Step.TLS, "skipped", 0, V6),
            _step(Step.HTTP, "skipped", 0, V6)))),
        TargetReport(plain, Verdict.REACHABLE, dns=dns, chains=((
            _step(Step.TCP, "ok", 0.02), _step(Step.HTTP, "ok", 0.05, facts=page)),)),
        TargetReport(tcp, Verdict.REACHABLE, chains=((_step(Step.TCP, "ok", 0.001, TCP),),)),
    )  # fmt: skip
    second = (
        TargetReport(site, Verdict.TLS_BLOCKING, dns=dns, control=dns, chains=((
            _step(Step.TCP, "ok", 0.02, V4), _step(Step.TLS, "tls_reset", 0.03, V4),
            _step(Step.HTTP, "skipped", 0, V4)),)),
        TargetReport(plain, Verdict.DNS_BLOCKING, dns=_step(Step.DNS, "dns_nxdomain", 0.2),
                     chains=((_step(Step.TCP, "skipped", 0), _step(Step.HTTP, "skipped", 0)),)),
        TargetReport(tcp, Verdict.TCP_IP_BLOCKING,
                     chains=((_step(Step.TCP, "tcp_timeout", 5, TCP),),)),
    )  # fmt: skip
    return [
        CycleReport(n, 1_700_000_000.0 + 60 * n, 5.0, reports, VantageHealth())
        for n, reports in ((1, first), (2, second))
    ]
