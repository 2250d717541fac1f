"""The one place where exceptions become result codes.

Every probe runs its network work inside `classify_errors(step)`, or calls `classify(step, exc)`,
and gets exactly one taxonomy code back. The mapping goes through a step-independent failure
*kind* (timeout, reset, refused, eof ...), the way OONI's netxlite classifier and httpcore's
`map_exceptions` work: one table from errno, `ssl` and timeout errors to kinds, and
`taxonomy.step_code` to turn a kind into the step's code (`tcp_reset`, `tls_reset`, ...).
"""

from __future__ import annotations

import asyncio
import errno
import os
import ssl

import aiohttp
import dns.exception

from probes.taxonomy import Step, step_code

# errno -> failure kind. ECONNABORTED and EPIPE are what a RST looks like when it lands
# while we are writing rather than reading.
ERRNO_KINDS: dict[int, str] = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.ECONNABORTED: "reset",
    errno.EPIPE: "reset",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "host_unreachable",
    errno.EHOSTDOWN: "host_unreachable",
    errno.ENETUNREACH: "net_unreachable",
    errno.ENETDOWN: "net_unreachable",
    # No route or no source address of that family (an IPv6 answer on an IPv4-only home).
    errno.EADDRNOTAVAIL: "net_unreachable",
    errno.EAFNOSUPPORT: "net_unreachable",
}

# OpenSSL verify codes that mean "valid chain, wrong name" rather than "untrusted chain".
_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64


def _ssl_kind(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in (_X509_V_ERR_HOSTNAME_MISMATCH, _X509_V_ERR_IP_ADDRESS_MISMATCH):
            return "hostname_mismatch"
        return "cert_invalid"
    if isinstance(exc, ssl.SSLZeroReturnError | ssl.SSLEOFError):
        return "eof"
    reason = (getattr(exc, "reason", None) or "").upper()
    if "ALERT" in reason:
        return "alert"
    if "UNEXPECTED_EOF" in reason:
        return "eof"
    return "error"


def failure_kind(exc: BaseException) -> str:
    """The step-independent kind of a failure: timeout, reset, refused, eof, alert ..."""
    # aiohttp wraps the interesting error; look at what it wraps first.
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return failure_kind(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error is not None:
        inner = exc.os_error
        if inner is not exc:
            return failure_kind(inner)
    if isinstance(exc, TimeoutError | dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return _ssl_kind(exc)
    if isinstance(
        exc,
        EOFError
        | asyncio.IncompleteReadError
        | aiohttp.ServerDisconnectedError
        | aiohttp.ClientPayloadError,
    ):
        return "eof"
    if isinstance(exc, OSError) and exc.errno in ERRNO_KINDS:
        return ERRNO_KINDS[exc.errno]
    if isinstance(exc, ConnectionResetError):
        return "reset"
    cause = exc.__cause__
    if cause is not None and cause is not exc:
        return failure_kind(cause)
    return "error"


def describe(exc: BaseException) -> str:
    """A short, single-line detail for an exception, without OpenSSL's source locations."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        text = exc.verify_message
    elif isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None):
        text = exc.reason.lower().replace("_", " ")
    elif isinstance(exc, OSError) and exc.errno and not isinstance(exc, TimeoutError):
        # asyncio puts the peer's address in strerror; the errno's text is all we want.
        text = os.strerror(exc.errno)
    else:
        text = str(exc).strip()
    if not text:
        text = "timed out" if isinstance(exc, TimeoutError) else exc.__class__.__name__
    return text.splitlines()[0][:200]


def classify(step: Step, exc: BaseException) -> tuple[str, str]:
    """Map an exception raised during `step` to (result code, detail)."""
    return step_code(step, failure_kind(exc)), describe(exc)
