"""The exception table, the step boundary (`probes.errors.measure`), bogon filter, DNS outcome
rules and the verdict roll-up."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

import aiohttp
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from measure.verdict import chain_verdict, representative
from probes.bogons import BogonFilter
from probes.dns import QueryOutcome, evaluate
from probes.errors import ERRNO_KINDS, Outcome, classify, measure
from probes.results import StepResult
from probes.taxonomy import ALL_CODES, CODES, OONI_FAILURE, Code, Step


def cert_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, message)
    exc.verify_code = code
    exc.verify_message = message
    return exc


@pytest.mark.parametrize(
    ("step", "exc", "code"),
    [
        (Step.TCP, ConnectionRefusedError(errno.ECONNREFUSED, "x"), "tcp_refused"),
        (Step.TCP, OSError(errno.ECONNRESET, "x"), "tcp_reset"),
        (Step.TCP, TimeoutError(), "tcp_timeout"),
        (Step.TCP, OSError(errno.EHOSTUNREACH, "x"), "tcp_host_unreachable"),
        (Step.TCP, OSError(errno.ENETUNREACH, "x"), "tcp_net_unreachable"),
        (Step.TCP, OSError(errno.EACCES, "x"), "tcp_error"),
        (Step.TLS, ConnectionResetError(errno.ECONNRESET, "x"), "tls_reset"),
        (Step.TLS, BrokenPipeError(errno.EPIPE, "x"), "tls_reset"),
        (Step.TLS, TimeoutError(), "tls_timeout"),
        (Step.TLS, ssl.SSLEOFError(8, "eof"), "tls_eof"),
        (Step.TLS, ssl.SSLZeroReturnError(6, "closed"), "tls_eof"),
        (Step.TLS, cert_error(62, "Hostname mismatch"), "tls_hostname_mismatch"),
        (Step.TLS, cert_error(20, "unable to get local issuer"), "tls_cert_invalid"),
        (Step.TLS, cert_error(10, "certificate has expired"), "tls_cert_expired"),
        (Step.HTTP, aiohttp.ServerDisconnectedError(), "http_eof"),
        (Step.HTTP, aiohttp.ServerTimeoutError(), "http_timeout"),
        (Step.HTTP, ConnectionResetError(errno.ECONNRESET, "x"), "http_reset"),
        (Step.HTTP, ValueError("odd"), "http_error"),
        (Step.DNS, dns.exception.Timeout(), "dns_timeout"),
        (Step.DNS, dns.exception.FormError("bad"), "dns_error"),
    ],
)
def test_exception_table(step: Step, exc: BaseException, code: str) -> None:
    assert classify(step, exc)[0] == code


def test_tls_alert_is_recognised_from_the_openssl_reason() -> None:
    exc = ssl.SSLError(1, "alert")
    exc.reason = "SSLV3_ALERT_HANDSHAKE_FAILURE"
    code, detail = classify(Step.TLS, exc)
    assert code == "tls_alert"
    assert detail == "sslv3 alert handshake failure"


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        # OpenSSL 3 reports a peer that closed mid-handshake as a plain SSLError.
        ("UNEXPECTED_EOF_WHILE_READING", "tls_eof"),
        ("WRONG_VERSION_NUMBER", "tls_error"),
        (None, "tls_error"),
    ],
)
def test_tls_failures_are_read_from_the_openssl_reason(reason: str | None, code: str) -> None:
    exc = ssl.SSLError(1, "handshake")
    exc.reason = reason
    assert classify(Step.TLS, exc)[0] == code


def test_aiohttp_wrapped_os_errors_are_unwrapped() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("h", 80, False, True, None, None, None)
    wrapped = aiohttp.ClientConnectorError(key, ConnectionResetError(errno.ECONNRESET, "x"))
    assert classify(Step.HTTP, wrapped)[0] == "http_reset"


def test_an_aiohttp_tls_error_is_read_from_the_error_it_wraps() -> None:
    """aiohttp's TLS connect error is an SSLError itself, without OpenSSL's reason: the
    wrapped error says what happened."""
    key = aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None)
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    eof.reason = "UNEXPECTED_EOF_WHILE_READING"
    wrapped = aiohttp.ClientConnectorSSLError(key, eof)
    assert classify(Step.HTTP, wrapped) == ("http_eof", "unexpected eof while reading")


def test_an_error_raised_from_another_is_classified_by_its_cause() -> None:
    """A library that wraps a reset in its own error (`raise ... from`): still a reset."""
    wrapper = RuntimeError("the library's own words")
    wrapper.__cause__ = ConnectionResetError(errno.ECONNRESET, "reset")
    assert classify(Step.TCP, wrapper) == ("tcp_reset", "the library's own words")


class _NotAnOsError(Exception):
    errno = errno.ECONNRESET
    reason = "not OpenSSL's"


def test_errno_and_reason_are_only_read_where_they_mean_what_the_table_says() -> None:
    """An `errno` outside an OSError, or a `reason` outside an SSLError (UnicodeDecodeError
    has one), is not the OS's or OpenSSL's word."""
    assert classify(Step.TCP, _NotAnOsError("odd")) == ("tcp_error", "odd")
    undecodable = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    assert classify(Step.HTTP, undecodable)[1] == str(undecodable)


@given(st.sampled_from(list(Step)), st.integers(0, 200))
def test_every_errno_gives_a_code_of_the_step(step: Step, number: int) -> None:
    code, _ = classify(step, OSError(number, "x"))
    assert code in CODES[step]
    if number in ERRNO_KINDS and f"{step.value}_{ERRNO_KINDS[number]}" in CODES[step]:
        assert code == f"{step.value}_{ERRNO_KINDS[number]}"


def test_every_code_has_an_ooni_failure_string() -> None:
    assert set(OONI_FAILURE) == ALL_CODES
    assert OONI_FAILURE["tcp_refused"] == "connection_refused"
    assert OONI_FAILURE["tls_hostname_mismatch"] == "ssl_invalid_hostname"
    assert OONI_FAILURE["dns_nxdomain"] == "dns_nxdomain_error"


@pytest.mark.parametrize(
    "address",
    ["10.1.2.3", "192.168.0.1", "172.16.5.4", "127.0.0.1", "100.64.0.1", "169.254.1.1",
     "198.18.0.1", "203.0.113.9", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::",
     "fe80::1", "fd00::1", "2001:db8::1", "::ffff:10.0.0.1", "ff02::1"],
)  # fmt: skip
def test_bogons(address: str) -> None:
    assert BogonFilter().is_bogon(address)


@pytest.mark.parametrize("address", ["149.154.167.51", "1.1.1.1", "2001:67c:4e8::1"])
def test_public_addresses_are_not_bogons(address: str) -> None:
    assert not BogonFilter().is_bogon(address)


def test_exempt_ranges_are_not_bogons() -> None:
    lab = BogonFilter([ipaddress.ip_network("198.18.0.0/15")])
    assert not lab.is_bogon("198.19.4.5")
    assert lab.is_bogon("10.0.0.1")


@given(st.ip_addresses())
def test_bogon_filter_is_total_and_exemption_wins(ip: ipaddress.IPv4Address) -> None:
    BogonFilter().is_bogon(ip)  # never raises, for any v4 or v6 address
    net = ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")
    assert not BogonFilter([net]).is_bogon(ip)


def response(qtype: int, rcode: int = dns.rcode.NOERROR, *addresses: str) -> dns.message.Message:
    query = dns.message.make_query("t.example.", qtype)
    msg = dns.message.make_response(query)
    msg.set_rcode(rcode)
    if addresses:
        msg.answer.append(
            dns.rrset.from_text("t.example.", 60, "IN", dns.rdatatype.to_text(qtype), *addresses)
        )
    return msg


A, AAAA = dns.rdatatype.A, dns.rdatatype.AAAA


def outcomes(a: list[dns.message.Message], aaaa: list[dns.message.Message] | None = None):
    return {A: QueryOutcome(responses=a), AAAA: QueryOutcome(responses=aaaa or [])}


def test_dns_answers_are_usable_addresses() -> None:
    code, _, addresses = evaluate(
        outcomes([response(A, 0, "1.2.3.4")], [response(AAAA, 0, "2001:4860::1")]), BogonFilter()
    )
    assert (code, addresses) == ("ok", ["1.2.3.4", "2001:4860::1"])


def test_two_differing_answers_are_injection_whatever_their_order() -> None:
    genuine, forged = response(A, 0, "1.2.3.4"), response(A, 0, "5.6.7.8")
    for order in ([genuine, forged], [forged, genuine]):
        code, detail, addresses = evaluate(outcomes(order), BogonFilter())
        assert code == "dns_injected"
        assert addresses == []
        assert "1.2.3.4" in detail
        assert "5.6.7.8" in detail


def test_duplicate_identical_answers_are_not_injection() -> None:
    same = response(A, 0, "1.2.3.4")
    assert evaluate(outcomes([same, response(A, 0, "1.2.3.4")]), BogonFilter())[0] == "ok"


def test_bogon_answers_are_never_usable() -> None:
    code, detail, addresses = evaluate(outcomes([response(A, 0, "10.10.34.35")]), BogonFilter())
    assert code == "dns_bogon"
    assert addresses == []
    assert "10.10.34.35" in detail


@pytest.mark.parametrize(
    ("rcode", "code"),
    [(dns.rcode.NXDOMAIN, "dns_nxdomain"), (dns.rcode.SERVFAIL, "dns_servfail"),
     (dns.rcode.REFUSED, "dns_refused"), (dns.rcode.NOERROR, "dns_no_answer"),
     (dns.rcode.NOTIMP, "dns_error")],
)  # fmt: skip
def test_rcodes(rcode: int, code: str) -> None:
    assert (
        evaluate(outcomes([response(A, rcode)], [response(AAAA, rcode)]), BogonFilter())[0] == code
    )


def test_timeout_on_both_queries() -> None:
    timed_out = {q: QueryOutcome(error=dns.exception.Timeout()) for q in (A, AAAA)}
    assert evaluate(timed_out, BogonFilter())[0] == "dns_timeout"


def test_an_answer_to_one_family_is_enough() -> None:
    mixed = {A: QueryOutcome(error=dns.exception.Timeout()),
             AAAA: QueryOutcome(responses=[response(AAAA, 0, "2001:4860::1")])}  # fmt: skip
    assert evaluate(mixed, BogonFilter())[0] == "ok"


def test_a_dns_detail_names_every_address_and_every_competing_answer() -> None:
    pair = ("1.2.3.4", "5.6.7.8")
    assert evaluate(outcomes([response(A, 0, *pair)]), BogonFilter())[:2] == (
        "ok", "1.2.3.4, 5.6.7.8"
    )  # fmt: skip
    bogons = outcomes([response(A, 0, "10.0.0.1", "10.0.0.2")])
    assert evaluate(bogons, BogonFilter())[:2] == (
        "dns_bogon", "answer in bogon space: 10.0.0.1, 10.0.0.2"
    )  # fmt: skip
    injected = outcomes([response(A, 0, *pair), response(A, dns.rcode.NXDOMAIN)])
    assert evaluate(injected, BogonFilter())[:2] == (
        "dns_injected", "A: 1.2.3.4,5.6.7.8 vs NXDOMAIN"
    )  # fmt: skip


def test_a_decisive_rcode_speaks_for_the_name_beside_an_empty_answer() -> None:
    """NXDOMAIN to AAAA beside an empty NOERROR to A: the name does not exist."""
    mixed = outcomes([response(A)], [response(AAAA, dns.rcode.NXDOMAIN)])
    assert evaluate(mixed, BogonFilter()) == ("dns_nxdomain", "NXDOMAIN", [])


def test_no_query_is_an_error_and_says_so() -> None:
    assert evaluate({}, BogonFilter()) == ("dns_error", "no query was sent", [])


def step(s: Step, result: str) -> StepResult:
    return StepResult(s, Code(result))


@pytest.mark.parametrize(
    ("results", "verdict"),
    [
        ([("dns", "ok"), ("tcp", "ok"), ("tls", "ok"), ("http", "ok")], "reachable"),
        ([("dns", "dns_nxdomain"), ("tcp", "skipped")], "dns_blocking"),
        ([("dns", "ok"), ("tcp", "tcp_timeout"), ("tls", "skipped")], "tcp_ip_blocking"),
        ([("dns", "ok"), ("tcp", "ok"), ("tls", "tls_reset")], "tls_blocking"),
        ([("dns", "ok"), ("tcp", "ok"), ("tls", "ok"), ("http", "http_blockpage")],
         "http_blocking"),
        ([("dns", "ok"), ("tcp", "tcp_error")], "inconclusive"),
        ([("tcp", "skipped")], "inconclusive"),
    ],
)  # fmt: skip
def test_chain_verdict(results: list[tuple[str, str]], verdict: str) -> None:
    assert chain_verdict([step(Step(s), r) for s, r in results]) == verdict


def test_representative_prefers_a_working_chain_then_the_furthest() -> None:
    v6 = [step(Step.TCP, "tcp_net_unreachable"), step(Step.TLS, "skipped")]
    v4_reset = [step(Step.TCP, "ok"), step(Step.TLS, "tls_reset")]
    v4_ok = [step(Step.TCP, "ok"), step(Step.TLS, "ok")]
    assert representative([v6, v4_reset]) is v4_reset
    assert representative([v6, v4_reset, v4_ok]) is v4_ok


def test_a_wrapped_certificate_error_is_described_by_the_certificate() -> None:
    """aiohttp's certificate error is an OSError carrying OpenSSL's errno 1: its detail must
    be the certificate's problem, not "Operation not permitted"."""
    key = aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None)
    inner = cert_error(20, "unable to get local issuer certificate")
    wrapped = aiohttp.ClientConnectorCertificateError(key, inner)
    code, detail = classify(Step.HTTP, wrapped)
    assert code == "http_error"
    assert detail == "unable to get local issuer certificate"


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("a library's broken __str__")


@pytest.mark.parametrize(
    ("exc", "detail"),
    [
        (TimeoutError(), "timed out"),
        (ValueError(), "ValueError"),
        (_Unprintable(), "_Unprintable"),
        # asyncio puts the peer's address in the message: the errno's text is the detail.
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 9)"),
         "Connection refused"),
        # A local firewall's reject reads EPERM on connect.
        (OSError(errno.EPERM, "connect"), "Operation not permitted"),
        # errno 0 is no error number ("Success"): the message says more.
        (OSError(0, "odd"), "[Errno 0] odd"),
        # Only the first line of a multi-line text, and at most 200 characters.
        (ValueError("certificate verify failed\n  at ssl/statem/statem_clnt.c:1889"),
         "certificate verify failed"),
        (ValueError("x" * 201), "x" * 200),
    ],
)  # fmt: skip
def test_details_are_short_and_say_what_happened(exc: BaseException, detail: str) -> None:
    assert classify(Step.TCP, exc)[1] == detail


def test_an_exception_group_speaks_through_its_first_member() -> None:
    """As a TaskGroup raises: the group is classified and described by its first error."""
    group = ExceptionGroup(
        "tasks failed", [ConnectionRefusedError(errno.ECONNREFUSED, "x"), ValueError("later")]
    )
    assert classify(Step.TCP, group) == ("tcp_refused", "Connection refused")


async def test_a_step_that_succeeds_keeps_its_outcome_and_duration() -> None:
    async def fine() -> Outcome:
        await asyncio.sleep(0.05)
        return Outcome(Code.OK, "fine")

    before = time.perf_counter()
    result = await measure(Step.TCP, "127.0.0.1:9", 5, fine)
    took = time.perf_counter() - before
    assert (result.result, result.address, result.detail) == ("ok", "127.0.0.1:9", "fine")
    assert 0.05 <= result.duration_seconds <= took


async def test_a_failed_step_keeps_its_step_address_and_duration() -> None:
    async def refused() -> Outcome:
        await asyncio.sleep(0.05)
        raise ConnectionRefusedError(errno.ECONNREFUSED, "x")

    before = time.perf_counter()
    result = await measure(Step.TCP, "127.0.0.1:9", 5, refused)
    took = time.perf_counter() - before
    assert (result.step, result.result, result.address, result.detail) == (
        Step.TCP, "tcp_refused", "127.0.0.1:9", "Connection refused"
    )  # fmt: skip
    assert 0.05 <= result.duration_seconds <= took


async def test_a_step_that_outlives_its_timeout_is_a_timeout_of_that_step() -> None:
    before = time.perf_counter()
    result = await measure(Step.TLS, "127.0.0.1:443", 0.05, lambda: asyncio.sleep(60))
    took = time.perf_counter() - before
    assert (result.result, result.detail) == ("tls_timeout", "timed out")
    assert 0.05 <= result.duration_seconds <= took


async def test_only_unclassified_errors_are_logged_with_their_traceback(caplog) -> None:
    """An `*_error` code means the table did not know the exception: the debug log is where
    an operator finds which one, with its traceback, to extend the table."""
    odd = ValueError("odd")

    def fails(exc: BaseException) -> Callable[[], Awaitable[Outcome]]:
        async def work() -> Outcome:
            raise exc

        return work

    caplog.set_level(logging.DEBUG, logger="reachprobe")
    await measure(Step.TCP, "127.0.0.1:9", 5, fails(OSError(errno.ECONNRESET, "x")))
    assert caplog.records == []
    await measure(Step.HTTP, "127.0.0.1:80", 5, fails(odd))
    (record,) = caplog.records
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == "http 127.0.0.1:80: unclassified ValueError('odd')"
    assert record.exc_info is not None
    assert record.exc_info[1] is odd
