"""Plain-language explanations of result codes and verdicts, for people who are not network
engineers: the status page and the `check` table read them from here, and only here.

`{host}` in a text stands for the target's host name.
"""

from __future__ import annotations

from enum import StrEnum

from measure.report import TargetReport, VantageHealth
from measure.verdict import Verdict
from probes.taxonomy import SKIPPED, Code

# Below this size a transfer rate measures the round trip, not the bandwidth: not shown.
RATE_MIN_BYTES = 16384

EXPLANATIONS: dict[Code, str] = {
    Code.OK: "this step worked",
    Code.SKIPPED: "not tried, because an earlier step failed",
    Code.DNS_NXDOMAIN: "the resolver says {host} does not exist; a censor can lie this way",
    Code.DNS_NO_ANSWER: "the resolver knows {host} but gave no address for it",
    Code.DNS_SERVFAIL: "the resolver failed to look up {host} (SERVFAIL)",
    Code.DNS_REFUSED: "the resolver refused to look up {host}",
    Code.DNS_TIMEOUT: "no answer came back for {host}: the query may have been dropped",
    Code.DNS_BOGON: (
        "the address given for {host} is a private or reserved one that no public site uses: "
        "a sign of DNS tampering"
    ),
    Code.DNS_INCONSISTENT: (
        "the address given for {host} differs from the uncensored resolver's and fails the "
        "site's certificate: a sign of DNS tampering"
    ),
    Code.DNS_INJECTED: (
        "two different answers came back for {host}: someone on the path injected a fake one"
    ),
    Code.DNS_FINGERPRINT: (
        "the address given for {host} is one that censors are known to answer with (a "
        "blockpage server or sinkhole): the lookup was tampered with"
    ),
    Code.DNS_ERROR: "the name lookup for {host} failed in an unexpected way",
    Code.TCP_TIMEOUT: "nobody answered the connection to {host}: the address may be blackholed",
    Code.TCP_RESET: "the connection to {host} was cut (reset) right away",
    Code.TCP_REFUSED: "the connection to {host} was refused",
    Code.TCP_HOST_UNREACHABLE: "the network says {host} cannot be reached",
    Code.TCP_NET_UNREACHABLE: "there is no route to {host} from here",
    Code.TCP_ERROR: "the connection to {host} failed in an unexpected way",
    Code.EXCHANGE_TIMEOUT: (
        "something accepted the connection to {host} but never answered as the service does: "
        "the service may be blocked behind a box that takes every connection"
    ),
    Code.EXCHANGE_RESET: "the connection to {host} was cut when the service was spoken to",
    Code.EXCHANGE_EOF: "the connection to {host} was closed before the service answered",
    Code.EXCHANGE_MISMATCH: (
        "something at {host} answered, but not as the real service would: not the real peer"
    ),
    Code.EXCHANGE_ERROR: "talking to the service at {host} failed in an unexpected way",
    Code.TLS_TIMEOUT: (
        "the secure connection to {host} stalled after the greeting that named it: "
        "often a sign of SNI filtering"
    ),
    Code.TLS_RESET: (
        "the connection was reset right after the TLS greeting that named {host}: "
        "a sign of SNI filtering"
    ),
    Code.TLS_EOF: (
        "the connection was closed right after the TLS greeting that named {host}: "
        "a sign of SNI filtering"
    ),
    Code.TLS_ALERT: "the other side refused the secure connection to {host} (a TLS alert)",
    Code.TLS_CERT_INVALID: (
        "the certificate presented for {host} is not trusted: someone may be intercepting"
    ),
    Code.TLS_CERT_EXPIRED: (
        "the certificate presented for {host} is expired or not yet valid (check this "
        "computer's clock too)"
    ),
    Code.TLS_NOT_TLS: (
        "the answer to the secure greeting for {host} was not a secure connection at all: "
        "a proxy or captive portal is intercepting"
    ),
    Code.TLS_HOSTNAME_MISMATCH: (
        "the certificate presented is for another name than {host}: the connection went "
        "somewhere else"
    ),
    Code.TLS_ERROR: "the secure connection to {host} failed in an unexpected way",
    Code.HTTP_TIMEOUT: "the page from {host} did not arrive in time: it may be throttled",
    Code.HTTP_RESET: "the connection was cut while asking {host} for the page",
    Code.HTTP_EOF: "the connection was closed before {host}'s page arrived",
    Code.HTTP_BLOCKPAGE: "instead of {host}, a known blocking page came back",
    Code.HTTP_STATUS_MISMATCH: "{host} answered with an unexpected status code",
    Code.HTTP_BODY_MISMATCH: "the page from {host} is not the one expected",
    Code.HTTP_ERROR: "asking {host} for the page failed in an unexpected way",
}

VERDICT_WORDS: dict[Verdict, str] = {
    Verdict.REACHABLE: "reachable",
    Verdict.DNS_BLOCKING: "blocked (DNS)",
    Verdict.TCP_IP_BLOCKING: "blocked (IP)",
    Verdict.PROTOCOL_BLOCKING: "blocked (protocol)",
    Verdict.TLS_BLOCKING: "blocked (TLS)",
    Verdict.HTTP_BLOCKING: "blocked (HTTP)",
    Verdict.VANTAGE_DOWN: "this connection is down",
    Verdict.INCONCLUSIVE: "inconclusive",
}


class Tone(StrEnum):
    """How a verdict looks to people: its colour and symbol on the status page (the value is
    the page's CSS class) and its colour in the `check` table."""

    OK = "ok"
    BLOCKED = "blocked"
    UNKNOWN = "unknown"


# A vantage whose own link is down has learned nothing about the target: not shown as blocked.
VERDICT_TONES: dict[Verdict, Tone] = {
    Verdict.REACHABLE: Tone.OK,
    Verdict.DNS_BLOCKING: Tone.BLOCKED,
    Verdict.TCP_IP_BLOCKING: Tone.BLOCKED,
    Verdict.PROTOCOL_BLOCKING: Tone.BLOCKED,
    Verdict.TLS_BLOCKING: Tone.BLOCKED,
    Verdict.HTTP_BLOCKING: Tone.BLOCKED,
    Verdict.VANTAGE_DOWN: Tone.UNKNOWN,
    Verdict.INCONCLUSIVE: Tone.UNKNOWN,
}


def health_problems(health: VantageHealth) -> list[str]:
    """What is wrong with the vantage itself, in words (empty when nothing is)."""
    problems = []
    if health.connectivity_up is False:
        codes = ", ".join(c.value for c in health.canary_failures)
        problems.append(
            f"no canary got through ({codes}): this connection is down, "
            "so failures like theirs are not counted as blocking"
        )
    if health.nxdomain_hijacked:
        problems.append("the resolver answers names that do not exist (NXDOMAIN hijacking)")
    if health.tcp_intercepted:
        problems.append(
            "a middlebox accepts every TCP connection: a bare connection proves nothing here"
        )
    return problems


def explain(code: Code | str, host: str) -> str:
    """The one-line explanation of `code` for a target whose host is `host`."""
    return EXPLANATIONS[Code(code)].format(host=host or "the target")


def verdict_words(verdict: Verdict | str) -> str:
    """A verdict as a person reads it: "blocked (TLS)" rather than `tls_blocking`."""
    return VERDICT_WORDS[Verdict(verdict)]


def verdict_tone(verdict: Verdict | str) -> Tone:
    """Whether a verdict is shown as fine, blocked or unknown."""
    return VERDICT_TONES[Verdict(verdict)]


def download_rate(report: TargetReport) -> float | None:
    """The page's download rate in KiB/s, when the page was big enough for it to mean
    something (throttling shows here: it has no verdict of its own)."""
    http = report.http
    if http is None or http.bytes_per_second is None or http.body_bytes < RATE_MIN_BYTES:
        return None
    return http.bytes_per_second / 1024


def step_timings(report: TargetReport) -> list[tuple[str, float]]:
    """(step, milliseconds) of each deciding step that ran, in order."""
    return [
        (s.step.value, s.duration_seconds * 1000)
        for s in report.deciding_steps
        if s.result != SKIPPED
    ]
