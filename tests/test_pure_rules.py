"""The measurement layer's pure rules, on hand-made results (no sockets): confirmation
(`confirm`), DNS consistency (`consistency`) and vantage health (`vantage.assess`/`adjust`)."""

from __future__ import annotations

from measure.followups import confirm, consistency
from measure.plan import TargetPlan, VantagePlan
from measure.report import TargetReport, VantageHealth
from measure.vantage import INTERCEPTED_NOTE, VANTAGE_DOWN_NOTE, VantageChecks, adjust, assess
from measure.verdict import Verdict, chain_verdict
from probes.results import DnsFacts, HttpFacts, StepResult, skipped
from probes.taxonomy import OK, Code, Step

AT = "192.0.2.1:443"


def dns(*addresses: str, code: Code = OK) -> StepResult:
    return StepResult(Step.DNS, code, None, 0.01, "", DnsFacts("udp", addresses))


def report(name: str, *codes: Code, group: str = "", scheme: str = "https") -> TargetReport:
    steps = [Step.TCP, Step.TLS, Step.HTTP] if scheme == "https" else [Step.TCP]
    chain = [StepResult(s, c, AT) for s, c in zip(steps, codes, strict=False)]
    chain += [skipped(s, None, "failed") for s in steps[len(chain) :]]
    target = TargetPlan(name, group, scheme, "192.0.2.1", 443)
    return TargetReport(target, chain_verdict(chain), chains=(tuple(chain),))


# --- confirm ----------------------------------------------------------------------------------


def test_only_what_loss_could_explain_is_confirmed() -> None:
    for code in (Code.TCP_TIMEOUT, Code.TLS_RESET, Code.HTTP_EOF, Code.DNS_TIMEOUT):
        assert confirm.worth_confirming(StepResult(Step.TCP, code))
    for code in (Code.TCP_REFUSED, Code.HTTP_BLOCKPAGE, Code.TLS_CERT_INVALID, OK):
        assert not confirm.worth_confirming(StepResult(Step.TCP, code))


def test_the_first_attempt_is_kept_as_evidence() -> None:
    first = StepResult(Step.TLS, Code.TLS_RESET, AT, detail="connection reset")
    evidence = confirm.first_attempt(first)
    assert (evidence.step, evidence.result, evidence.detail) == (
        "tls",
        Code.TLS_RESET,
        first.detail,
    )
    assert evidence.summary() is None


# --- consistency ------------------------------------------------------------------------------


def test_pages_differ_by_status_title_or_much_shorter_body() -> None:
    page = HttpFacts(200, 10_000, None, title="Example")
    assert consistency.page_difference(page, page) is None
    assert consistency.page_difference(page, HttpFacts(403, 10_000, None)) == "status 200 vs 403"
    other = HttpFacts(200, 10_000, None, title="Blocked")
    assert consistency.page_difference(page, other) == "title 'Example' vs 'Blocked'"
    assert consistency.page_difference(page, HttpFacts(200, 8_000, None, title="EXAMPLE")) is None
    short = HttpFacts(200, 7_000, None, title="Example")
    assert consistency.page_difference(page, short) == "body 10000 vs 7000 bytes"


def test_a_page_is_needed_only_when_the_answers_share_nothing() -> None:
    assert consistency.needs_page(dns("192.0.2.1"), dns("198.51.100.1"))
    assert not consistency.needs_page(dns("192.0.2.1"), dns("192.0.2.1", "198.51.100.1"))
    assert not consistency.needs_page(dns("192.0.2.1"), None)
    assert not consistency.needs_page(dns(code=Code.DNS_NXDOMAIN), dns("198.51.100.1"))


def test_disjoint_answers_that_fail_tls_for_the_name_are_inconsistent() -> None:
    test, control = dns("192.0.2.1"), dns("198.51.100.1")
    mismatch = [(StepResult(Step.TCP, OK, AT), StepResult(Step.TLS, Code.TLS_HOSTNAME_MISMATCH))]
    shown = consistency.decide(test, control, mismatch)
    assert shown.result == Code.DNS_INCONSISTENT
    assert "fail TLS validation for the name" in shown.detail
    assert test.result == OK  # the measured result is not edited
    # A reset is no proof that the answer was wrong; a working handshake proves it right.
    reset = [(StepResult(Step.TCP, OK, AT), StepResult(Step.TLS, Code.TLS_RESET))]
    assert consistency.decide(test, control, reset).result == OK
    fine = [(StepResult(Step.TCP, OK, AT), StepResult(Step.TLS, OK))]
    assert consistency.decide(test, control, fine).result == OK
    # Shared answers are consistent whatever TLS says; the control rides along as evidence.
    shared = consistency.decide(dns("198.51.100.1"), control, mismatch)
    assert shared.result == OK
    assert shared.to_json()["data"]["control"]["addresses"] == ["198.51.100.1"]


def test_without_tls_only_a_differing_page_makes_answers_inconsistent() -> None:
    test, control = dns("192.0.2.1"), dns("198.51.100.1")
    plain = [(StepResult(Step.TCP, OK, AT), StepResult(Step.HTTP, OK))]
    assert consistency.decide(test, control, plain).result == OK
    same = consistency.PageComparison("198.51.100.1:80", 200, "x", 100, None)
    assert consistency.decide(test, control, plain, same).result == OK
    differs = consistency.PageComparison("198.51.100.1:80", 200, "x", 100, "status 200 vs 403")
    shown = consistency.decide(test, control, plain, differs)
    assert shown.result == Code.DNS_INCONSISTENT
    assert shown.detail.endswith("serve another page: status 200 vs 403")


def test_a_failed_control_is_named_and_decides_nothing() -> None:
    failed = StepResult(Step.DNS, Code.DNS_TIMEOUT, detail="timed out")
    shown = consistency.decide(dns("192.0.2.1"), failed, [])
    assert shown.result == OK
    assert shown.to_json()["data"]["control"] == {
        "result": "dns_timeout",
        "addresses": [],
        "detail": "timed out",
    }


# --- vantage.assess / adjust ------------------------------------------------------------------

PLAN = VantagePlan(canary_group="canary")


def test_canaries_that_connect_show_the_link_up() -> None:
    reports = [
        report("c1", OK, OK, OK, group="canary"),
        report("c2", OK, Code.TLS_CERT_INVALID, group="canary"),  # a proxy: still connected
        report("site", Code.TCP_TIMEOUT),
    ]
    health = assess(reports, VantageChecks(), PLAN)
    assert (health.canaries, health.canaries_up, health.canaries_connected) == (2, 1, 2)
    assert health.connectivity_up is True
    assert health.canary_failures == ()
    assert assess(reports[2:], VantageChecks(), PLAN).connectivity_up is None


def test_a_failure_every_canary_shares_is_the_vantage_down() -> None:
    canaries = [report(f"c{i}", Code.TCP_TIMEOUT, group="canary") for i in (1, 2)]
    health = assess(canaries, VantageChecks(), PLAN)
    assert health.connectivity_up is False
    assert health.canary_failures == (Code.TCP_TIMEOUT,)
    down = adjust(report("site", Code.TCP_TIMEOUT), health)
    assert (down.verdict, down.local_verdict, down.note) == (
        Verdict.VANTAGE_DOWN,
        Verdict.TCP_IP_BLOCKING,
        VANTAGE_DOWN_NOTE,
    )
    # Another failure than the canaries' is the target's own.
    other = report("rst", Code.TCP_REFUSED)
    assert adjust(other, health) is other


def test_nxdomain_rewriting_and_a_connect_anywhere_box() -> None:
    checks = VantageChecks(
        nxdomain=dns("203.0.113.9"), tcp=StepResult(Step.TCP, OK, "192.0.2.255:443")
    )
    health = assess([], checks, PLAN)
    assert (health.nxdomain_hijacked, health.nxdomain_answer) == (True, ("203.0.113.9",))
    assert health.tcp_intercepted is True
    bare = report("tcp-only", OK, scheme="tcp")
    adjusted = adjust(bare, health)
    assert (adjusted.verdict, adjusted.note) == (Verdict.INCONCLUSIVE, INTERCEPTED_NOTE)
    # A chain proved beyond the connect (TLS with the target's certificate) stands.
    proved = report("site", OK, OK, OK)
    assert adjust(proved, health) is proved
    honest = assess([], VantageChecks(nxdomain=dns(code=Code.DNS_NXDOMAIN)), PLAN)
    assert (honest.nxdomain_hijacked, honest.tcp_intercepted) == (False, None)
    assert adjust(bare, VantageHealth()) is bare
