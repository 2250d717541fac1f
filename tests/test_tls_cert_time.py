"""probes.tls.cert_time_to_seconds agrees with the standard library's parser."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.tls import cert_time_to_seconds

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def openssl_form(when: datetime) -> str:
    """As OpenSSL's ASN1_TIME_print writes it: the day padded with a space."""
    clock = when.strftime("%H:%M:%S")
    return f"{MONTHS[when.month - 1]} {when.day:2d} {clock} {when.year} GMT"


@given(st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(9999, 12, 31)))
def test_matches_the_standard_library(when: datetime) -> None:
    text = openssl_form(when)
    assert cert_time_to_seconds(text) == ssl.cert_time_to_seconds(text)


def test_known_value() -> None:
    text = "Nov  5 20:41:37 2027 GMT"
    expected = int(datetime(2027, 11, 5, 20, 41, 37, tzinfo=UTC).timestamp())
    assert cert_time_to_seconds(text) == expected


def _outcome(parse: Callable[[str], int], text: str) -> int | str:
    try:
        return parse(text)
    except ValueError as exc:
        return f"ValueError: {exc}"


@pytest.mark.parametrize(
    "text",
    [
        "Feb 30 00:00:00 2027 GMT",  # strptime takes it, datetime does not
        "Dec 31 23:59:60 2016 GMT",  # a leap second: likewise
        "Foo  1 00:00:00 2027 GMT",
        "Nov  5 20:41 2027 GMT",
        "Nov  5 20:41:37 2027 UTC",
        "",
    ],
)
def test_odd_forms_as_the_standard_library(text: str) -> None:
    assert _outcome(cert_time_to_seconds, text) == _outcome(ssl.cert_time_to_seconds, text)
