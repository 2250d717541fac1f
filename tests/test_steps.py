"""The step table (measure/steps.py): every chain step has a runner, the plan's step order is
the order run, and the one connection path skips what follows a failure."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from measure import prober, steps
from measure.plan import HttpPlan, TargetPlan
from probes import http
from probes.errors import Outcome, deadline, measure
from probes.exchange import Exchange
from probes.results import Endpoint, StepResult
from probes.taxonomy import SKIPPED, Code, Step
from simlab.net import closed_port
from simlab.tcp import RawServer


class Tools:
    ssl_context = ssl.create_default_context()

    def expectations(self, target: TargetPlan) -> http.HttpExpectations:
        raise AssertionError("no HTTP step in these tests")

    async def usable_addresses(self, host: str) -> Sequence[str]:
        return ()


def test_every_chain_step_has_a_runner() -> None:
    assert set(steps.RUNNERS) == set(Step) - {Step.DNS}


URL = "https://example.test/"
PLANS = [
    TargetPlan("t", "", "tcp", "192.0.2.1", 443),
    TargetPlan("x", "", "tcp", "192.0.2.1", 443, exchange=Exchange("bytes", b"hi", None, 64)),
    TargetPlan("s", "", "tls", "example.test", 443),
    TargetPlan("h", "", "https", "example.test", 443, HttpPlan(URL, urlsplit(URL))),
]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.scheme)
def test_every_planned_step_is_in_the_table(plan: TargetPlan) -> None:
    assert all(step in steps.RUNNERS for step in plan.steps)


async def test_the_connection_path_skips_after_the_first_failure() -> None:
    closed = closed_port("127.0.0.1")
    plan = TargetPlan("s", "", "https", "example.test", closed, HttpPlan(URL, urlsplit(URL)))
    chain = await steps.connect(Tools(), plan, "127.0.0.1", 2.0)
    assert [(s.step, s.result) for s in chain] == [
        (Step.TCP, Code.TCP_REFUSED),
        (Step.TLS, SKIPPED),
        (Step.HTTP, SKIPPED),
    ]
    assert {s.endpoint for s in chain} == {Endpoint("127.0.0.1", closed)}
    assert chain[1].detail == "tcp failed"


async def test_the_connection_path_runs_only_the_steps_asked_for() -> None:
    server = await RawServer("silent", "127.0.0.1").start()
    try:
        plan = TargetPlan("s", "", "tls", "example.test", server.port)
        [connected] = await steps.connect(Tools(), plan, "127.0.0.1", 2.0, (Step.TCP,))
    finally:
        await server.close()
    assert connected.ok
    assert connected.endpoint == Endpoint("127.0.0.1", server.port)


def test_an_endpoint_is_text_only_at_output() -> None:
    v6 = Endpoint("2001:db8::1", 443)
    assert (str(v6), v6.family) == ("[2001:db8::1]:443", "ipv6")
    assert (str(Endpoint("192.0.2.1", 80)), Endpoint("192.0.2.1", 80).family) == (
        "192.0.2.1:80",
        "ipv4",
    )
    # A result written by hand from text gets the same typed endpoint.
    assert StepResult(Step.TCP, Code.OK, "[2001:db8::1]:443").endpoint == v6
    assert StepResult(Step.TCP, Code.OK, v6).to_json()["address"] == "[2001:db8::1]:443"


async def test_the_deadline_is_set_once_at_the_boundary() -> None:
    seen: list[float] = []

    async def work() -> Outcome:
        seen.append(deadline().remaining())
        seen.append(deadline().at - deadline().reading_until)
        return Outcome()

    result = await measure(Step.HTTP, Endpoint("127.0.0.1", 80), 2.0, work)
    assert result.ok
    assert 1.5 < seen[0] <= 2.0
    assert seen[1] == pytest.approx(0.2)
    with pytest.raises(RuntimeError, match="inside measure"):
        deadline()


async def test_a_timed_out_step_is_classified_at_the_boundary() -> None:
    result = await measure(Step.TLS, Endpoint("127.0.0.1", 443), 0.05, lambda: asyncio.sleep(9))
    assert result.result == Code.TLS_TIMEOUT


def test_no_if_elif_restates_the_step_order() -> None:
    """The prober runs what the plan declares through the table; it names no step runner."""
    text = Path(prober.__file__).read_text(encoding="utf-8")
    assert not re.search(r"\b(tcp|tls|exchange)\.run\(", text)
