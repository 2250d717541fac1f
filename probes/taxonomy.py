"""The failure taxonomy: every step ends in exactly one result code.

The codes are a contract (metrics, JSON output, dashboards and rules depend on them); the
repository's docs/taxonomy.md lists them. Each code maps to the closest failure string of OONI
(ooni/spec df-007-errors) so that researchers can line our results up with OONI's. The enums
are the single source: the per-step code sets, the OONI table and the docs table derive from them.
"""

from __future__ import annotations

from enum import StrEnum


class Step(StrEnum):
    """A probe step, in the order a target's chain runs them."""

    DNS = "dns"
    TCP = "tcp"
    # An application exchange over the TCP connection (MTProto, or a configured send/expect):
    # proof that the peer is the service, not any box that accepts a SYN.
    EXCHANGE = "exchange"
    TLS = "tls"
    HTTP = "http"


class Failure(StrEnum):
    """A step-independent kind of failure, as the exception table sees it."""

    TIMEOUT = "timeout"
    RESET = "reset"
    REFUSED = "refused"
    EOF = "eof"
    ALERT = "alert"
    CERT_INVALID = "cert_invalid"
    CERT_EXPIRED = "cert_expired"
    HOSTNAME_MISMATCH = "hostname_mismatch"
    NOT_TLS = "not_tls"
    MISMATCH = "mismatch"
    HOST_UNREACHABLE = "host_unreachable"
    NET_UNREACHABLE = "net_unreachable"
    ERROR = "error"


class Code(StrEnum):
    """A step's result code. The prefix before the first `_` names the step."""

    OK = "ok"
    SKIPPED = "skipped"
    DNS_NXDOMAIN = "dns_nxdomain"
    DNS_NO_ANSWER = "dns_no_answer"
    DNS_SERVFAIL = "dns_servfail"
    DNS_REFUSED = "dns_refused"
    DNS_TIMEOUT = "dns_timeout"
    DNS_BOGON = "dns_bogon"
    DNS_INCONSISTENT = "dns_inconsistent"
    DNS_INJECTED = "dns_injected"
    DNS_FINGERPRINT = "dns_fingerprint"
    DNS_ERROR = "dns_error"
    TCP_TIMEOUT = "tcp_timeout"
    TCP_RESET = "tcp_reset"
    TCP_REFUSED = "tcp_refused"
    TCP_HOST_UNREACHABLE = "tcp_host_unreachable"
    TCP_NET_UNREACHABLE = "tcp_net_unreachable"
    TCP_ERROR = "tcp_error"
    EXCHANGE_TIMEOUT = "exchange_timeout"
    EXCHANGE_RESET = "exchange_reset"
    EXCHANGE_EOF = "exchange_eof"
    EXCHANGE_MISMATCH = "exchange_mismatch"
    EXCHANGE_ERROR = "exchange_error"
    TLS_TIMEOUT = "tls_timeout"
    TLS_RESET = "tls_reset"
    TLS_EOF = "tls_eof"
    TLS_ALERT = "tls_alert"
    TLS_CERT_INVALID = "tls_cert_invalid"
    TLS_CERT_EXPIRED = "tls_cert_expired"
    TLS_HOSTNAME_MISMATCH = "tls_hostname_mismatch"
    TLS_NOT_TLS = "tls_not_tls"
    TLS_ERROR = "tls_error"
    HTTP_TIMEOUT = "http_timeout"
    HTTP_RESET = "http_reset"
    HTTP_EOF = "http_eof"
    HTTP_BLOCKPAGE = "http_blockpage"
    HTTP_STATUS_MISMATCH = "http_status_mismatch"
    HTTP_BODY_MISMATCH = "http_body_mismatch"
    HTTP_ERROR = "http_error"

    @property
    def step(self) -> Step | None:
        """The step this code belongs to; None for `ok` and `skipped`, which every step has."""
        prefix = self.value.split("_", 1)[0]
        return Step(prefix) if prefix in Step.__members__.values() else None


OK = Code.OK
SKIPPED = Code.SKIPPED

CODES: dict[Step, tuple[Code, ...]] = {
    step: tuple(c for c in Code if c.step is step) for step in Step
}
ALL_CODES: frozenset[Code] = frozenset(Code)

# Our code -> OONI's failure string (ooni/probe-cli internal/netxlite, ooni/spec df-007).
# None means success (OONI writes `failure: null`). Codes with no OONI counterpart use the
# string OONI's analysis uses for the same observation, or `unknown_failure: ...`.
OONI_FAILURE: dict[Code, str | None] = {
    Code.OK: None,
    Code.SKIPPED: None,
    Code.DNS_NXDOMAIN: "dns_nxdomain_error",
    Code.DNS_NO_ANSWER: "dns_no_answer",
    Code.DNS_SERVFAIL: "dns_servfail_error",
    Code.DNS_REFUSED: "dns_refused_error",
    Code.DNS_TIMEOUT: "generic_timeout_error",
    Code.DNS_BOGON: "dns_bogon_error",
    Code.DNS_INCONSISTENT: "dns_consistency_failure",
    Code.DNS_INJECTED: "dns_injection_failure",
    # OONI records such a query as answered (failure null) and names the match in its
    # analysis (ooni/data's DNS fingerprint id); there is no failure string for it.
    Code.DNS_FINGERPRINT: "unknown_failure: dns fingerprint",
    Code.DNS_ERROR: "unknown_failure: dns",
    Code.TCP_TIMEOUT: "generic_timeout_error",
    Code.TCP_RESET: "connection_reset",
    Code.TCP_REFUSED: "connection_refused",
    Code.TCP_HOST_UNREACHABLE: "host_unreachable",
    Code.TCP_NET_UNREACHABLE: "network_unreachable",
    Code.TCP_ERROR: "unknown_failure: tcp",
    Code.EXCHANGE_TIMEOUT: "generic_timeout_error",
    Code.EXCHANGE_RESET: "connection_reset",
    Code.EXCHANGE_EOF: "eof_error",
    Code.EXCHANGE_MISMATCH: "unknown_failure: unexpected response",
    Code.EXCHANGE_ERROR: "unknown_failure: exchange",
    Code.TLS_TIMEOUT: "generic_timeout_error",
    Code.TLS_RESET: "connection_reset",
    Code.TLS_EOF: "eof_error",
    Code.TLS_ALERT: "ssl_failed_handshake",
    Code.TLS_CERT_INVALID: "ssl_unknown_authority",
    Code.TLS_CERT_EXPIRED: "ssl_invalid_certificate",
    Code.TLS_HOSTNAME_MISMATCH: "ssl_invalid_hostname",
    Code.TLS_NOT_TLS: "ssl_failed_handshake",
    Code.TLS_ERROR: "ssl_failed_handshake",
    Code.HTTP_TIMEOUT: "generic_timeout_error",
    Code.HTTP_RESET: "connection_reset",
    Code.HTTP_EOF: "eof_error",
    Code.HTTP_BLOCKPAGE: "http_blockpage",
    Code.HTTP_STATUS_MISMATCH: "http_unexpected_status_code",
    Code.HTTP_BODY_MISMATCH: "http_unexpected_body",
    Code.HTTP_ERROR: "unknown_failure: http",
}


def step_code(step: Step, kind: Failure) -> Code:
    """The code `<step>_<kind>` if the taxonomy has it, else `<step>_error`."""
    try:
        code = Code(f"{step.value}_{kind.value}")
    except ValueError:
        return Code(f"{step.value}_error")
    return code if code.step is step else Code(f"{step.value}_error")


def ooni_failure(code: Code | str) -> str | None:
    """OONI's failure string for one of our result codes."""
    return OONI_FAILURE[Code(code)]
