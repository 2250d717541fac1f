"""The failure taxonomy: every step ends in exactly one result code.

The codes are a contract (metrics, JSON output, dashboards and rules depend on them); see
DESIGN.md. Each code maps to the closest failure string of OONI (ooni/spec df-007-errors) so
that researchers can line our results up with OONI's.
"""

from __future__ import annotations

from enum import StrEnum


class Step(StrEnum):
    """A probe step, in the order a target's chain runs them."""

    DNS = "dns"
    TCP = "tcp"
    TLS = "tls"
    HTTP = "http"


OK = "ok"
SKIPPED = "skipped"

CODES: dict[Step, tuple[str, ...]] = {
    Step.DNS: (
        "dns_nxdomain",
        "dns_no_answer",
        "dns_servfail",
        "dns_refused",
        "dns_timeout",
        "dns_bogon",
        "dns_inconsistent",
        "dns_injected",
        "dns_error",
    ),
    Step.TCP: (
        "tcp_timeout",
        "tcp_reset",
        "tcp_refused",
        "tcp_host_unreachable",
        "tcp_net_unreachable",
        "tcp_error",
    ),
    Step.TLS: (
        "tls_timeout",
        "tls_reset",
        "tls_eof",
        "tls_alert",
        "tls_cert_invalid",
        "tls_hostname_mismatch",
        "tls_error",
    ),
    Step.HTTP: (
        "http_timeout",
        "http_reset",
        "http_eof",
        "http_blockpage",
        "http_status_mismatch",
        "http_body_mismatch",
        "http_error",
    ),
}

ALL_CODES: frozenset[str] = frozenset({OK, SKIPPED}.union(*CODES.values()))

# Our code -> OONI's failure string. None means success (OONI writes `failure: null`).
# Codes with no OONI counterpart use the string OONI's probe-cli uses for the same
# observation in its analysis (e.g. `dns_bogons_failure`), or `unknown_failure: ...`.
OONI_FAILURE: dict[str, str | None] = {
    OK: None,
    SKIPPED: None,
    "dns_nxdomain": "dns_nxdomain_error",
    "dns_no_answer": "dns_no_answer",
    "dns_servfail": "dns_server_misbehaving",
    "dns_refused": "dns_refused_error",
    "dns_timeout": "generic_timeout_error",
    "dns_bogon": "dns_bogons_failure",
    "dns_inconsistent": "dns_consistency_failure",
    "dns_injected": "dns_injection_failure",
    "dns_error": "unknown_failure: dns",
    "tcp_timeout": "generic_timeout_error",
    "tcp_reset": "connection_reset",
    "tcp_refused": "connection_refused",
    "tcp_host_unreachable": "host_unreachable",
    "tcp_net_unreachable": "network_unreachable",
    "tcp_error": "unknown_failure: tcp",
    "tls_timeout": "generic_timeout_error",
    "tls_reset": "connection_reset",
    "tls_eof": "eof_error",
    "tls_alert": "ssl_failed_handshake",
    "tls_cert_invalid": "ssl_unknown_authority",
    "tls_hostname_mismatch": "ssl_invalid_hostname",
    "tls_error": "ssl_failed_handshake",
    "http_timeout": "generic_timeout_error",
    "http_reset": "connection_reset",
    "http_eof": "eof_error",
    "http_blockpage": "http_blockpage",
    "http_status_mismatch": "http_unexpected_status_code",
    "http_body_mismatch": "http_unexpected_body",
    "http_error": "unknown_failure: http",
}


def step_code(step: Step, kind: str) -> str:
    """Return the code `<step>_<kind>` if the taxonomy has it, else `<step>_error`.

    `kind` is a step-independent failure kind such as `timeout`, `reset` or `eof`.
    """
    code = f"{step.value}_{kind}"
    return code if code in CODES[step] else f"{step.value}_error"


def ooni_failure(code: str) -> str | None:
    """OONI's failure string for one of our result codes."""
    return OONI_FAILURE[code]
