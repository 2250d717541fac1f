"""Issue 22's attempt model and residual blocking: the try that got furthest decides, a retry
that fails earlier is named evidence, and a trigger followed by silence at the same endpoint
is residual blocking, not an IP block (the pure rules, then real loopback sockets)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from measure.cycle import run_cycle
from measure.followups import confirm, residual, sni
from measure.plan import ProbePlan, TargetPlan
from measure.prober import Prober
from measure.report import TargetReport, VantageHealth
from measure.verdict import Verdict, chain_verdict
from probes.browser import CONTROL_NAME
from probes.dns import Resolver
from probes.results import Endpoint, StepResult, skipped
from probes.taxonomy import OK, Code, Step
from simlab.tcp import RawServer

AT = Endpoint("192.0.2.7", 443)
ELSEWHERE = Endpoint("192.0.2.8", 443)
TRIGGER = TargetPlan("blocked", "", "tls", "blocked.example", 443)
INNOCENT = TargetPlan("innocent", "", "tls", "innocent.example", 443)
UP = VantageHealth(canaries=2, canaries_up=2, canaries_connected=2)
DOWN = VantageHealth(canaries=2, canary_failures=(Code.TCP_TIMEOUT,))


def chain(*codes: Code, at: Endpoint = AT) -> list[StepResult]:
    """A tcp-then-tls chain ending in `codes` (the rest skipped)."""
    steps = [Step.TCP, Step.TLS]
    out = [StepResult(s, c, at) for s, c in zip(steps, codes, strict=False)]
    return out + [skipped(s, at, "failed") for s in steps[len(out) :]]


def report(target: TargetPlan, steps: list[StepResult]) -> TargetReport:
    return TargetReport(target, chain_verdict(steps), chains=(tuple(steps),))


# --- one attempt model ------------------------------------------------------------------------


def test_a_retry_that_fails_earlier_is_evidence_not_the_verdict() -> None:
    decided = confirm.decide(chain(OK, Code.TLS_TIMEOUT), chain(Code.TCP_TIMEOUT))
    assert [s.result for s in decided] == [OK, Code.TLS_TIMEOUT]
    assert chain_verdict(decided) == Verdict.TLS_BLOCKING
    [evidence] = decided[1].evidence
    assert isinstance(evidence, confirm.RetryFailedEarlier)
    assert (evidence.step, evidence.result, evidence.silent) == ("tcp", Code.TCP_TIMEOUT, True)
    data = decided[1].to_json()["data"]["retry"]
    assert data["note"] == confirm.SILENT_AFTER_TRIGGER
    assert "went silent after the trigger" in decided[1].full_detail


def test_a_retry_that_gets_as_far_or_further_decides() -> None:
    further = confirm.decide(chain(Code.TCP_TIMEOUT), chain(OK, Code.TLS_RESET))
    assert [s.result for s in further] == [OK, Code.TLS_RESET]
    assert further[0].to_json()["data"]["first_attempt"]["result"] == "tcp_timeout"
    tie = confirm.decide(chain(OK, Code.TLS_TIMEOUT), chain(OK, Code.TLS_RESET))
    assert tie[1].result == Code.TLS_RESET
    assert tie[1].to_json()["data"]["first_attempt"]["result"] == "tls_timeout"


# --- residual blocking, the rule --------------------------------------------------------------


def silenced_trigger() -> TargetReport:
    """A handshake that timed out, whose innocuous-SNI re-check could not even connect."""
    steps = chain(OK, Code.TLS_TIMEOUT)
    steps[1] = steps[1].with_evidence(sni.SniEvidence(CONTROL_NAME, Code.TCP_TIMEOUT, None))
    return report(TRIGGER, steps)


def test_a_trigger_then_silence_is_residual_and_keeps_its_tls_verdict() -> None:
    [marked] = residual.mark([silenced_trigger()], UP, residual.Memory(), 100.0)
    assert marked.verdict == Verdict.TLS_BLOCKING
    assert marked.residual == residual.Residual(AT, "blocked", residual.BY_SNI_RECHECK)
    out = marked.to_json()
    assert out["residual"] == {"endpoint": str(AT), "trigger": "blocked", "seen_by": "sni_recheck"}
    assert "residual blocking" in marked.why()


def test_an_innocent_name_silenced_at_the_same_address_is_not_ip_blocking() -> None:
    innocent = report(INNOCENT, chain(Code.TCP_TIMEOUT))
    elsewhere = report(INNOCENT, chain(Code.TCP_TIMEOUT, at=ELSEWHERE))
    trigger, silenced, other = residual.mark(
        [silenced_trigger(), innocent, elsewhere], UP, residual.Memory(), 100.0
    )
    assert trigger.residual is not None
    assert silenced.verdict == Verdict.INCONCLUSIVE
    assert silenced.local_verdict == Verdict.TCP_IP_BLOCKING
    assert silenced.residual == residual.Residual(AT, "blocked", residual.BY_LATER_CONNECT)
    assert "went silent after blocked's handshake" in (silenced.note or "")
    # Another address's SYN failure says nothing about this trigger.
    assert (other.verdict, other.residual) == (Verdict.TCP_IP_BLOCKING, None)


def test_nothing_is_residual_when_the_link_itself_may_be_down() -> None:
    memory = residual.Memory()
    innocent = report(INNOCENT, chain(Code.TCP_TIMEOUT))
    marked = residual.mark([silenced_trigger(), innocent], DOWN, memory, 100.0)
    assert [r.residual for r in marked] == [None, None]
    assert marked[1].verdict == Verdict.TCP_IP_BLOCKING
    assert memory.triggers == {}


def test_without_canaries_another_connection_shows_the_link_works() -> None:
    unknown = VantageHealth()
    alone = report(INNOCENT, chain(Code.TCP_TIMEOUT))
    assert residual.mark([alone], unknown, residual.Memory(), 1.0)[0].residual is None
    [marked, _] = residual.mark([silenced_trigger(), alone], unknown, residual.Memory(), 1.0)
    assert marked.residual is not None


def test_the_memory_carries_a_trigger_into_later_cycles_for_a_window() -> None:
    memory = residual.Memory(window=60.0)
    residual.mark([silenced_trigger()], UP, memory, 100.0)
    assert memory.suspects(130.0) == {"blocked": AT}
    later = report(TRIGGER, chain(Code.TCP_TIMEOUT))  # the trigger's own next SYN
    [marked] = residual.mark([later], UP, memory, 130.0)
    assert (marked.verdict, marked.local_verdict) == (Verdict.INCONCLUSIVE, Verdict.TCP_IP_BLOCKING)
    [expired] = residual.mark([later], UP, memory, 200.0)
    assert (expired.verdict, expired.residual) == (Verdict.TCP_IP_BLOCKING, None)
    assert memory.suspects(200.0) == {}


def test_a_name_filter_without_silence_is_no_trigger() -> None:
    steps = chain(OK, Code.TLS_RESET)
    steps[1] = steps[1].with_evidence(sni.SniEvidence(CONTROL_NAME, Code.TLS_ERROR, True))
    memory = residual.Memory()
    [marked] = residual.mark([report(TRIGGER, steps)], UP, memory, 1.0)
    assert marked.residual is None
    assert memory.triggers == {}


# --- on real sockets --------------------------------------------------------------------------


@pytest.fixture
async def goes_silent() -> AsyncIterator[int]:
    """A port that accepts one connection, never answers on it, then refuses all others: the
    shape of residual blocking on loopback (refused where a censor's drop would time out)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    async def accept_one() -> None:
        conn, _ = await asyncio.get_running_loop().sock_accept(listener)
        held.append(conn)
        listener.close()

    task = asyncio.ensure_future(accept_one())
    try:
        yield port
    finally:
        task.cancel()
        listener.close()
        for conn in held:
            conn.close()


async def test_the_prober_keeps_the_furthest_try_and_rechecks_its_handshake(
    goes_silent: int,
) -> None:
    target = TargetPlan("blocked", "", "tls", "127.0.0.1", goes_silent)
    canary = await RawServer("silent", "127.0.0.1").start()
    canaries = (TargetPlan("canary-1", "canary", "tcp", "127.0.0.1", canary.port),)
    plan = ProbePlan((target, *canaries), Resolver("udp", (("127.0.0.1", 9),)), timeout=0.5)
    prober = Prober(plan)
    try:
        cycle = await run_cycle(prober, plan.targets)
        first = cycle.reports[0]
        assert cycle.vantage.connectivity_up is True
        # Before issue 22 the retry's chain (refused at the SYN) became the verdict.
        assert first.verdict == Verdict.TLS_BLOCKING, first.to_json()
        tls = first.chains[0][1].to_json()
        assert tls["result"] == "tls_timeout"
        assert tls["data"]["retry"]["result"] == "tcp_refused"
        assert tls["data"]["control_sni"]["result"] == "tcp_refused"
        assert first.to_json()["residual"]["seen_by"] == "sni_recheck"
        # The next cycle: the address is still silent, and the target is a suspect that
        # starts after the others; its SYN failure is residual, not an IP block.
        where = Endpoint("127.0.0.1", goes_silent)
        assert prober.residual.suspects(time.monotonic()) == {"blocked": where}
        second = (await run_cycle(prober, plan.targets)).reports[0]
    finally:
        await prober.aclose()
        await canary.close()
    assert second.verdict == Verdict.INCONCLUSIVE, second.to_json()
    assert second.local_verdict == Verdict.TCP_IP_BLOCKING
    assert second.to_json()["residual"]["seen_by"] == "later_connect"


def test_two_names_that_both_look_like_the_trigger_are_both_inconclusive() -> None:
    """Probed at the same moment, the innocent name's handshake was caught by the other's
    block: one vantage cannot tell which set it off in this cycle."""
    other = silenced_trigger()
    other = TargetReport(INNOCENT, other.verdict, chains=other.chains)
    memory = residual.Memory()
    marked = residual.mark([silenced_trigger(), other], UP, memory, 1.0)
    assert [r.verdict for r in marked] == [Verdict.INCONCLUSIVE] * 2
    assert [r.local_verdict for r in marked] == [Verdict.TLS_BLOCKING] * 2
    assert all("probed at the same moment" in (r.note or "") for r in marked)
    assert memory.suspects(1.0) == {"blocked": AT, "innocent": AT}


def test_an_http_request_can_be_the_trigger_too() -> None:
    steps = [
        StepResult(Step.TCP, OK, AT),
        StepResult(Step.TLS, OK, AT),
        StepResult(Step.HTTP, Code.HTTP_TIMEOUT, AT),
    ]
    steps[2] = steps[2].with_evidence(
        confirm.RetryFailedEarlier("tcp", Code.TCP_TIMEOUT, "timed out")
    )
    [marked] = residual.mark([report(TRIGGER, steps)], UP, residual.Memory(), 1.0)
    assert marked.verdict == Verdict.HTTP_BLOCKING
    assert marked.residual == residual.Residual(AT, "blocked", residual.BY_RETRY)
