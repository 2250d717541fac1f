"""The measurement log sink: one JSON line per target per cycle, size-rotated, opt-in.

The record follows OONI's base format (ooni/spec df-000-base) and web_connectivity's
`test_keys` where a field means the same; docs/measurement-log.md is the schema. A record
never holds the volunteer's own address: the steps carry only the addresses probed.
Rotation is the standard library's `RotatingFileHandler`; writes run off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from logging.handlers import RotatingFileHandler
from typing import Any

from agent import __version__
from agent.config import AgentSection, Config, MeasurementLogSection
from agent.sinks import Sink
from measure.plan import ProbePlan
from measure.report import CycleReport, TargetReport
from measure.verdict import Verdict
from probes.results import DnsFacts, HttpFacts, StepResult, TlsFacts
from probes.taxonomy import SKIPPED, Code, Step

log = logging.getLogger("reachprobe")

DATA_FORMAT_VERSION = "0.2.0"
SCHEMA = "reachprobe-measurement/1"
# How long aclose() waits for the last lines to reach the disk.
CLOSE_TIMEOUT = 5.0
# web_connectivity's `blocking`: where the failure happened; false when accessible, null
# when nothing can be said.
BLOCKING: dict[Verdict, str | bool | None] = {
    Verdict.REACHABLE: False,
    Verdict.DNS_BLOCKING: "dns",
    Verdict.TCP_IP_BLOCKING: "tcp_ip",
    Verdict.TLS_BLOCKING: "http-failure",
    Verdict.HTTP_BLOCKING: "http-failure",
    Verdict.INCONCLUSIVE: None,
}
# A response that arrived but was not the site's own is web_connectivity's "http-diff".
HTTP_DIFF = frozenset({Code.HTTP_BLOCKPAGE, Code.HTTP_BODY_MISMATCH, Code.HTTP_STATUS_MISMATCH})


def _ooni_time(at: float) -> str:
    """OONI's timestamp format: UTC, `YYYY-mm-dd HH:MM:SS`."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _query(step: StepResult, hostname: str) -> dict[str, Any]:
    facts = step.facts if isinstance(step.facts, DnsFacts) else None
    answers = [
        {"answer_type": "AAAA" if ":" in a else "A", ("ipv6" if ":" in a else "ipv4"): a}
        for a in (facts.addresses if facts else ())
    ]
    return {
        "hostname": hostname,
        "engine": facts.resolver if facts else None,
        "failure": step.ooni_failure,
        "answers": answers,
        "duration_seconds": round(step.duration_seconds, 6),
    }


def _tcp(step: StepResult) -> dict[str, Any]:
    endpoint = step.endpoint
    return {
        "ip": endpoint.address if endpoint is not None else None,
        "port": endpoint.port if endpoint is not None else None,
        "status": {"success": step.ok, "failure": step.ooni_failure},
        "duration_seconds": round(step.duration_seconds, 6),
    }


def _tls(step: StepResult, server_name: str | None) -> dict[str, Any]:
    facts = step.facts if isinstance(step.facts, TlsFacts) else None
    return {
        "address": step.address,
        "server_name": server_name,
        "failure": step.ooni_failure,
        "tls_version": facts.version if facts else None,
        "cipher_suite": facts.cipher if facts else None,
        "duration_seconds": round(step.duration_seconds, 6),
    }


def _request(step: StepResult, url: str) -> dict[str, Any]:
    facts = step.facts if isinstance(step.facts, HttpFacts) else None
    response = None
    if facts is not None:
        response = {"code": facts.status, "body_length": facts.body_bytes}
    return {
        "request": {"url": url, "method": "GET"},
        "response": response,
        "failure": step.ooni_failure,
        "duration_seconds": round(step.duration_seconds, 6),
    }


def _input(report: TargetReport) -> str:
    target = report.target
    if target.http is not None:
        return target.http.url
    return f"{target.scheme}://{target.host}:{target.port}"


def record(agent: AgentSection, cycle: CycleReport, report: TargetReport) -> dict[str, Any]:
    """The measurement log record of one target in one cycle (docs/measurement-log.md)."""
    target = report.target
    ran = [s for s in report.steps if s.result != SKIPPED]
    by_step = {step: [s for s in ran if s.step == step] for step in Step}
    url = _input(report)
    blocking = BLOCKING[report.verdict]
    http_codes = {s.result for s in by_step[Step.HTTP]}
    if report.verdict == Verdict.HTTP_BLOCKING and http_codes & HTTP_DIFF:
        blocking = "http-diff"
    return {
        "schema": SCHEMA,
        "data_format_version": DATA_FORMAT_VERSION,
        "software_name": "reachprobe",
        "software_version": __version__,
        "test_name": "reachprobe",
        "test_start_time": _ooni_time(cycle.started_at),
        "measurement_start_time": _ooni_time(cycle.started_at),
        "test_runtime": round(sum(s.duration_seconds for s in ran), 6),
        "input": url,
        "probe_cc": agent.country or "ZZ",
        "probe_asn": agent.asn or "AS0",
        "annotations": {"vantage": agent.vantage, "role": agent.role, "cycle": cycle.number},
        "test_keys": {
            "target": target.name,
            "group": target.group or None,
            "verdict": report.verdict.value,
            "accessible": None if blocking is None else blocking is False,
            "blocking": blocking,
            "queries": [_query(s, target.host) for s in by_step[Step.DNS]],
            "tcp_connect": [_tcp(s) for s in by_step[Step.TCP]],
            "tls_handshakes": [_tls(s, target.sni) for s in by_step[Step.TLS]],
            "requests": [_request(s, url) for s in by_step[Step.HTTP]],
            "steps": [s.to_json() for s in report.steps],
            **({"error": report.error} if report.error is not None else {}),
        },
    }


class MeasurementLogSink(Sink):
    """Appends every target's record to the configured file; does nothing while the config
    has no `measurement_log` section (a reload can switch it on, off or elsewhere)."""

    def __init__(self) -> None:
        self.agent = AgentSection()
        self.settings: MeasurementLogSection | None = None
        self._handler: RotatingFileHandler | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def configure(self, config: Config, plan: ProbePlan) -> None:
        self.agent = config.agent
        if config.measurement_log == self.settings:
            return
        old, self._handler = self._handler, None
        self.settings = config.measurement_log
        if self.settings is not None:
            self._handler = RotatingFileHandler(
                self.settings.path,
                maxBytes=self.settings.max_bytes,
                backupCount=self.settings.backups,
                encoding="utf-8",
                delay=True,
            )
            self._handler.setFormatter(logging.Formatter("%(message)s"))
        if old is not None:
            old.close()

    def publish(self, cycle: CycleReport) -> None:
        handler = self._handler
        if handler is None:
            return
        lines = [
            json.dumps(record(self.agent, cycle, r), ensure_ascii=False, separators=(",", ":"))
            for r in cycle.reports
        ]
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(_write, handler, lines))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def aclose(self) -> None:
        if self._writes:
            _, pending = await asyncio.wait(self._writes, timeout=CLOSE_TIMEOUT)
            if pending:
                log.warning("measurement log: %d writes did not finish in time", len(pending))
        if self._handler is not None:
            self._handler.close()
            self._handler = None


def _write(handler: RotatingFileHandler, lines: list[str]) -> None:
    """Append lines through the rotating handler (which locks and rotates by size)."""
    for line in lines:
        handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
