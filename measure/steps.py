"""The step table: one runner per step of an address's chain, and the one connection path.

A target's plan declares its steps (`TargetPlan.steps`: tcp, then the exchange or tls, then
http); `connect` runs them in that order on one `Connection`, each through its runner in
`RUNNERS`, and writes the steps after the first failure as skipped. The chain, the SNI
re-check (tcp and tls with another name) and the vantage's TCP canary (tcp alone) all go
through `connect`, so there is one place that opens, builds up and closes a connection.

Adding a step: a `Step` member, the runner (`async def run(call: StepCall) -> StepResult`,
the step's own `probes/` module doing the work through `probes.errors.measure`), one line in
`RUNNERS`, and the step in `TargetPlan.steps` where the plan asks for it
(tests/test_steps.py checks that every chain step has a runner).

The QUIC step is in the table too, though not in any chain: it runs alone on its own
`connect` (`QUIC_STEP`), beside the chains, since browsers fall back to TCP when HTTP/3 fails
and its result is evidence, not the verdict (docs/taxonomy.md).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from measure.plan import TargetPlan
from probes import exchange, http, quic, tcp, tls
from probes.connection import Connection
from probes.results import StepResult, skipped
from probes.taxonomy import Step


class Tools(Protocol):
    """What the runners share under one plan (the `Prober` is one)."""

    ssl_context: ssl.SSLContext
    quic_trust: quic.QuicTrust

    def expectations(self, target: TargetPlan) -> http.HttpExpectations: ...

    async def usable_addresses(self, host: str) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class StepCall:
    """One step to run: the target, the connection the earlier steps built up, the name the
    ClientHello sends this time (the target's own, or the SNI re-check's innocuous one) and
    the step's timeout (its deadline is set at the step's boundary, `probes.errors.measure`)."""

    tools: Tools
    target: TargetPlan
    conn: Connection
    sni: str | None
    timeout: float


Runner = Callable[[StepCall], Awaitable[StepResult]]


async def _tcp(call: StepCall) -> StepResult:
    return await tcp.run(call.conn, call.timeout)


async def _exchange(call: StepCall) -> StepResult:
    assert call.target.exchange is not None, "planned only for targets with an exchange"
    return await exchange.run(call.conn, call.target.exchange, call.timeout)


async def _tls(call: StepCall) -> StepResult:
    assert call.sni is not None, "planned only for TLS targets"
    return await tls.run(call.conn, call.sni, call.tools.ssl_context, call.timeout)


async def _http(call: StepCall) -> StepResult:
    target = call.target
    assert target.http is not None, "planned only for URL targets"
    return await http.run(
        call.conn,
        target.http.parts,
        ssl_context=call.tools.ssl_context,
        timeout=call.timeout,
        expect=call.tools.expectations(target),
        resolve=call.tools.usable_addresses,
    )


async def _quic(call: StepCall) -> StepResult:
    request = call.target.quic
    assert request is not None, "planned only for targets with http3"
    conn = call.conn
    return await quic.run(conn.address, conn.port, request, call.tools.quic_trust, call.timeout)


RUNNERS: dict[Step, Runner] = {
    Step.TCP: _tcp,
    Step.EXCHANGE: _exchange,
    Step.TLS: _tls,
    Step.HTTP: _http,
    Step.QUIC: _quic,
}
# The steps `connect` runs for the QUIC step: it alone, over UDP (the connection's socket is
# never opened).
QUIC_STEP = (Step.QUIC,)


async def connect(
    tools: Tools,
    target: TargetPlan,
    address: str,
    timeout: float,
    steps: Sequence[Step] | None = None,
    sni: str | None = None,
) -> list[StepResult]:
    """The one connection path: a fresh connection to `address` on the target's port, the
    target's steps (or `steps`) run on it in order, closed after (reset, when a step failed).
    After the first failure the rest are skipped, naming the step that failed. `sni`
    replaces the target's name in the ClientHello (the SNI re-check)."""
    conn = Connection(address, target.port)
    call = StepCall(tools, target, conn, sni if sni is not None else target.sni, timeout)
    results: list[StepResult] = []
    failed: StepResult | None = None
    done = False
    try:
        for step in target.steps if steps is None else steps:
            if failed is not None:
                results.append(skipped(step, conn.endpoint, f"{failed.step.value} failed"))
                continue
            result = await RUNNERS[step](call)
            results.append(result)
            if not result.ok:
                failed = result
        done = failed is None
    finally:
        # A failed or cancelled chain is reset, so that nothing it sent is retransmitted
        # after it gave up (probes.connection.Connection.close).
        conn.close(abort=not done)
    return results
