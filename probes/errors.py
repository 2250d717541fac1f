"""The one place where exceptions become result codes.

Every step runs its network work through `measure(step, endpoint, timeout, work)`: the step's
only boundary, where it is timed, bounded by its timeout (the step's one `Deadline`, which the
work reads through `deadline()` instead of deriving its own) and classified. A step never catches
exceptions itself. The mapping goes through a step-independent failure kind (`Failure`), the
way OONI's netxlite classifier and httpcore's `map_exceptions` work: one table from errno,
`ssl` and timeout errors to kinds, and `taxonomy.step_code` to turn a kind into the step's code
(`tcp_reset`, `tls_reset`, ...).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import dns.exception

from probes.results import Endpoint, Facts, StepResult
from probes.taxonomy import Code, Failure, Step, step_code

log = logging.getLogger("reachprobe")

# errno -> failure kind. ECONNABORTED and EPIPE are what a RST looks like when it lands
# while we are writing rather than reading.
ERRNO_KINDS: dict[int, Failure] = {
    errno.ECONNREFUSED: Failure.REFUSED,
    errno.ECONNRESET: Failure.RESET,
    errno.ECONNABORTED: Failure.RESET,
    errno.EPIPE: Failure.RESET,
    errno.ETIMEDOUT: Failure.TIMEOUT,
    errno.EHOSTUNREACH: Failure.HOST_UNREACHABLE,
    errno.EHOSTDOWN: Failure.HOST_UNREACHABLE,
    errno.ENETUNREACH: Failure.NET_UNREACHABLE,
    errno.ENETDOWN: Failure.NET_UNREACHABLE,
    # No route or no source address of that family (an IPv6 answer on an IPv4-only home).
    errno.EADDRNOTAVAIL: Failure.NET_UNREACHABLE,
    errno.EAFNOSUPPORT: Failure.NET_UNREACHABLE,
}

# OpenSSL verify codes that mean "valid chain, wrong name" rather than "untrusted chain",
# and "trusted but out of its validity period" (OONI: ssl_invalid_certificate).
_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64
_X509_V_ERR_CERT_NOT_YET_VALID = 9
_X509_V_ERR_CERT_HAS_EXPIRED = 10


def _ssl_kind(exc: ssl.SSLError) -> Failure:
    if isinstance(exc, ssl.SSLCertVerificationError):
        # getattr: aiohttp's certificate errors pass this isinstance without the attributes.
        code = getattr(exc, "verify_code", None)
        if code in (_X509_V_ERR_HOSTNAME_MISMATCH, _X509_V_ERR_IP_ADDRESS_MISMATCH):
            return Failure.HOSTNAME_MISMATCH
        if code in (_X509_V_ERR_CERT_NOT_YET_VALID, _X509_V_ERR_CERT_HAS_EXPIRED):
            return Failure.CERT_EXPIRED
        return Failure.CERT_INVALID
    if isinstance(exc, ssl.SSLZeroReturnError | ssl.SSLEOFError):
        return Failure.EOF
    reason = str(getattr(exc, "reason", None) or "").upper()
    if "ALERT" in reason:
        return Failure.ALERT
    if "UNEXPECTED_EOF" in reason:
        return Failure.EOF
    return Failure.ERROR


class PeerProtocolError(Exception):
    """The peer answered, but not as the protocol we speak says it must (a plaintext HTTP
    answer to a ClientHello, a reply that is not MTProto ...). `kind` names the failure."""

    kind = Failure.ERROR


class NotTlsError(PeerProtocolError):
    """The answer to the ClientHello is not TLS (a proxy's HTTP 403, a captive portal)."""

    kind = Failure.NOT_TLS


class UnexpectedReplyError(PeerProtocolError):
    """An application exchange got an answer that is not the expected one."""

    kind = Failure.MISMATCH


# How deep to follow wrapped errors (aiohttp wrappers, __cause__); a cycle must not loop.
_MAX_WRAPS = 8


def _aiohttp() -> Any:
    """aiohttp, if anything loaded it (DoH does): none of its errors can exist before, and the
    steps that never use it need not load it (13 MiB and 90 ms per process)."""
    return sys.modules.get("aiohttp")


def client_errors() -> tuple[type[BaseException], ...]:
    """aiohttp's base error if aiohttp is loaded, for an `except` that must not load it."""
    aiohttp = _aiohttp()
    return (aiohttp.ClientError,) if aiohttp is not None else ()


def _unwrap(exc: BaseException) -> BaseException | None:
    """The error `exc` wraps, if it is a wrapper whose inner error says more (an exception
    group, as a TaskGroup raises, speaks through its first member)."""
    if isinstance(exc, BaseExceptionGroup):
        members = getattr(exc, "exceptions", ())
        if members and isinstance(members[0], BaseException):
            return members[0]
    aiohttp = _aiohttp()
    if aiohttp is None:
        return None
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        inner = getattr(exc, "certificate_error", None)
        if isinstance(inner, BaseException):
            return inner
    if isinstance(exc, aiohttp.ClientConnectorError):
        inner = getattr(exc, "os_error", None)
        if isinstance(inner, BaseException):
            return inner
    return None


def _own_kind(exc: BaseException) -> Failure | None:
    """The kind `exc` itself says, or None when only what it wraps could tell."""
    if isinstance(exc, PeerProtocolError):
        return exc.kind
    if isinstance(exc, TimeoutError | dns.exception.Timeout):
        return Failure.TIMEOUT
    if isinstance(exc, ssl.SSLError):
        return _ssl_kind(exc)
    aiohttp = _aiohttp()
    if isinstance(exc, EOFError | asyncio.IncompleteReadError) or (
        aiohttp is not None
        and isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError)
    ):
        return Failure.EOF
    number = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if isinstance(number, int) and number in ERRNO_KINDS:
        return ERRNO_KINDS[number]
    if isinstance(exc, ConnectionResetError):
        return Failure.RESET
    return None


def failure_kind(exc: BaseException) -> Failure:
    """The step-independent kind of a failure: timeout, reset, refused, eof, alert ...

    aiohttp wraps the interesting error, and so may any library (`raise ... from`): the
    wrapped errors are looked at first, then the wrapper, then its cause, a bounded number
    of times.
    """
    current: BaseException | None = exc
    seen: set[int] = set()
    for _ in range(_MAX_WRAPS):
        if current is None or id(current) in seen:
            break
        seen.add(id(current))
        inner = _unwrap(current)
        if inner is not None and id(inner) not in seen:
            current = inner
            continue
        kind = _own_kind(current)
        if kind is not None:
            return kind
        current = current.__cause__
    return Failure.ERROR


def _text(exc: BaseException) -> str:
    verify_message = getattr(exc, "verify_message", None)
    reason = getattr(exc, "reason", None)
    number = getattr(exc, "errno", None)
    if isinstance(exc, ssl.SSLCertVerificationError) and isinstance(verify_message, str):
        return verify_message
    if isinstance(exc, ssl.SSLError) and isinstance(reason, str) and reason:
        return reason.lower().replace("_", " ")
    is_os_error = isinstance(exc, OSError) and not isinstance(exc, TimeoutError)
    if is_os_error and isinstance(number, int) and number > 0:
        # asyncio puts the peer's address in strerror; the errno's text is all we want.
        return os.strerror(number)
    return str(exc).strip()


def describe(exc: BaseException) -> str:
    """A short, single-line detail for an exception, without OpenSSL's source locations.

    A wrapper is described by what it wraps, as its kind is: aiohttp's certificate error is
    an OSError whose errno is OpenSSL's 1, which would read "Operation not permitted"."""
    for _ in range(_MAX_WRAPS):
        inner = _unwrap(exc)
        if inner is None or inner is exc:
            break
        exc = inner
    try:
        text = _text(exc)
    except Exception:  # a broken __str__ from a library must not cost the result
        text = ""
    if not text:
        text = "timed out" if isinstance(exc, TimeoutError) else exc.__class__.__name__
    lines = text.splitlines()
    return (lines[0] if lines else text)[:200]


def classify(step: Step, exc: BaseException) -> tuple[Code, str]:
    """Map an exception raised during `step` to (result code, detail). Never raises."""
    return step_code(step, failure_kind(exc)), describe(exc)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a step's work concluded when it raised nothing."""

    code: Code = Code.OK
    detail: str = ""
    facts: Facts | None = None


@dataclass(frozen=True, slots=True)
class Deadline:
    """When the running step's boundary gives up on it (event-loop time), set once by
    `measure`."""

    at: float
    timeout: float

    @property
    def reading_until(self) -> float:
        """When a step that reads for as long as data comes stops reading: a little before
        `at`, so that it reports what it got (a stalled or dripping body) instead of being
        cancelled by the boundary."""
        return self.at - max(0.1, self.timeout / 10)

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - asyncio.get_running_loop().time()


_DEADLINE: ContextVar[Deadline | None] = ContextVar("reachprobe_step_deadline", default=None)


def deadline() -> Deadline:
    """The deadline of the step whose work is running (inside `measure`)."""
    current = _DEADLINE.get()
    if current is None:
        raise RuntimeError("deadline() is for a step's work, inside measure() with a timeout")
    return current


async def measure(
    step: Step,
    endpoint: Endpoint | str | None,
    timeout: float,
    work: Callable[[], Awaitable[Outcome]],
) -> StepResult:
    """Run one step's `work`: timed, bounded by `timeout`, its exceptions classified here.

    The step's one deadline is set here (`deadline()` gives it to the work). Any exception a
    library raises while talking to a peer becomes a code of the step (`*_error` when the
    table does not know it), so network input never reaches the caller as an exception.
    Cancellation passes through.
    """
    start = time.perf_counter()
    token = _DEADLINE.set(Deadline(asyncio.get_running_loop().time() + timeout, timeout))
    try:
        async with asyncio.timeout(timeout):
            outcome = await work()
    except Exception as exc:
        code, detail = classify(step, exc)
        if code.value.endswith("_error"):
            log.debug("%s %s: unclassified %r", step.value, endpoint, exc, exc_info=exc)
        return StepResult(step, code, endpoint, time.perf_counter() - start, detail, started=start)
    finally:
        _DEADLINE.reset(token)
    elapsed = time.perf_counter() - start
    return StepResult(
        step, outcome.code, endpoint, elapsed, outcome.detail, outcome.facts, started=start
    )
