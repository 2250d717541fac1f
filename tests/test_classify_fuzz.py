"""The classifier is total: whatever a library raises, with whatever attributes, it gives a
code of the step and a one-line detail, and never raises itself (network input must never
become an internal error)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ssl

import aiohttp
import dns.exception
import dns.resolver
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.errors import classify
from probes.taxonomy import CODES, Step


def exception_classes() -> list[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for module in (ssl, aiohttp, dns.exception, dns.resolver, asyncio, __builtins__):
        members = vars(module) if not isinstance(module, dict) else module
        for value in list(members.values()):
            if inspect.isclass(value) and issubclass(value, Exception):
                found.add(value)
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


CLASSES = exception_classes()
ATTRIBUTES = (
    "errno", "strerror", "verify_code", "verify_message", "reason", "library",
    "os_error", "certificate_error", "__cause__", "__context__",
)  # fmt: skip
leaf = st.one_of(
    st.none(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=30),
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=3),
    st.builds(OSError, st.integers(-5, 200), st.text(max_size=10)),
    st.builds(ssl.SSLError, st.integers(0, 10), st.text(max_size=10)),
)


def build(cls: type[BaseException], args: list[object]) -> BaseException:
    try:
        return cls(*args)
    except Exception:
        pass
    try:
        return cls.__new__(cls)  # constructors that want specific arguments
    except TypeError:
        return cls("group", [OSError(104, "reset")])  # exception groups want their members


@st.composite
def hostile_exceptions(draw: st.DrawFn) -> BaseException:
    exc = build(draw(st.sampled_from(CLASSES)), draw(st.lists(leaf, max_size=3)))
    for name in draw(st.lists(st.sampled_from(ATTRIBUTES), max_size=4, unique=True)):
        value = draw(leaf)
        if name in ("__cause__", "__context__") and not isinstance(value, BaseException):
            value = None
        # Read-only on some types: the library cannot set it there either.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, name, value)
    if draw(st.booleans()):
        exc.__cause__ = exc  # a cycle must not loop the classifier
    return exc


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(list(Step)), hostile_exceptions())
def test_classify_is_total(step: Step, exc: BaseException) -> None:
    code, detail = classify(step, exc)
    assert code in CODES[step]
    assert isinstance(detail, str)
    assert detail
    assert "\n" not in detail
    assert len(detail) <= 200


def test_aiohttp_certificate_error_without_verify_message_is_a_tls_code() -> None:
    """The real-world crash: aiohttp's certificate error passes isinstance checks for
    ssl.SSLCertVerificationError but lacks its attributes."""
    key = aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None)
    cert = ssl.SSLCertVerificationError(1, "self-signed certificate")
    wrapped = aiohttp.ClientConnectorCertificateError(key, cert)
    code, detail = classify(Step.HTTP, wrapped)
    assert code == "http_error"
    assert detail
    bare = aiohttp.ClientConnectorCertificateError.__new__(aiohttp.ClientConnectorCertificateError)
    assert classify(Step.TLS, bare)[0] in CODES[Step.TLS]
