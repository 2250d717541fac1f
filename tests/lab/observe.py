"""Questions the lab's tests ask Prometheus about one vantage, with bounded waits.

Every wait polls with a deadline derived from the lab's timing (agent interval and timeout,
scrape and rule-evaluation interval): a state the agents should reach "within one interval"
is given exactly that plus the time it takes to be observed.
"""

from __future__ import annotations

from tests.lab.agents import INTERVAL_SECONDS, TIMEOUT_SECONDS, Agent
from tests.lab.prometheus import SCRAPE_INTERVAL_SECONDS, Prometheus

# From a rule change to the metrics: the cycle after the change (one interval, plus the
# target's start jitter of a tenth of it), the probe's own timeout, a scrape, a rule
# evaluation, and a second of slack for process scheduling.
RECOVERY_SECONDS = INTERVAL_SECONDS * 1.1 + TIMEOUT_SECONDS + 2 * SCRAPE_INTERVAL_SECONDS + 1.0
# Some rules need two cycles that failed the same way (a counter's increase over a window).
DETECTION_SECONDS = 2 * RECOVERY_SECONDS + INTERVAL_SECONDS


def instance(agent: Agent) -> str:
    """The `instance` label Prometheus gives the agent's series."""
    host, port = agent.listen
    return f"{host}:{port}"


def selector(metric: str, agent: Agent | None = None, **labels: str) -> str:
    """`metric{instance="...",label="value",...}`; label names use `_` as Python allows."""
    matchers = [f'instance="{instance(agent)}"'] if agent is not None else []
    matchers += [f'{key}="{value}"' for key, value in labels.items()]
    return f"{metric}{{{','.join(matchers)}}}"


def wait_true(prom: Prometheus, expr: str, timeout: float, what: str = "") -> list[dict]:
    """Wait until `expr` returns a non-empty vector (a PromQL comparison that holds)."""
    return prom.wait_for(expr, bool, timeout, what)


def wait_verdict(prom: Prometheus, agent: Agent, target: str, verdict: str, timeout: float) -> None:
    """Wait until the agent's state-set gauge says `verdict` for `target`."""
    expr = selector("reachprobe_target_verdict", agent, target=target, verdict=verdict) + " == 1"
    wait_true(prom, expr, timeout, f"{agent.vantage.vantage}: {target} is {verdict}")


def wait_result(
    prom: Prometheus, agent: Agent, target: str, step: str, result: str, timeout: float
) -> None:
    """Wait until the agent's last `step` of `target` failed and `result` was counted."""
    failed = selector("reachprobe_probe_success", agent, target=target, step=step) + " == 0"
    counted = (
        selector("reachprobe_probe_results_total", agent, target=target, step=step, result=result)
        + " > 0"
    )
    wait_true(
        prom,
        f"({failed}) and on (instance, target, step) ({counted})",
        timeout,
        f"{agent.vantage.vantage}: {target} {step} step fails with {result}",
    )


def wait_up(prom: Prometheus, agent: Agent, target: str, up: bool, timeout: float) -> None:
    """Wait until `reachprobe_target_up` of `target` at the agent is 1 (`up`) or 0."""
    expr = selector("reachprobe_target_up", agent, target=target) + f" == {int(up)}"
    state = "up" if up else "down"
    wait_true(prom, expr, timeout, f"{agent.vantage.vantage}: {target} is {state}")


def wait_blocked_at_vantage(prom: Prometheus, target: str, blocked: bool, timeout: float) -> None:
    """Wait until the recording rule marks `target` as blocked at the test vantage (or not)."""
    expr = selector("reachprobe:target_blocked_at_vantage", target=target) + f" == {int(blocked)}"
    wait_true(prom, expr, timeout, f"rule: {target} blocked-at-vantage is {int(blocked)}")


def wait_dominant_failure(prom: Prometheus, target: str, result: str, timeout: float) -> None:
    """Wait until the test vantage's most frequent failure of `target` is `result`."""
    expr = selector("reachprobe:target_dominant_failure:5m", target=target, result=result)
    wait_true(prom, expr, timeout, f"rule: {target} fails mostly with {result}")


def success_gap(prom: Prometheus, target: str) -> float:
    """The rule's control-minus-test success ratio of `target` (0 when not computed)."""
    result = prom.query(selector("reachprobe:target_success_ratio_gap:5m", target=target))
    return float(result[0]["value"][1]) if result else 0.0
