"""The HTTP step against hostile and odd peers: each gets a clear code, none crashes the probe,
and reads stay bounded."""

from __future__ import annotations

import asyncio
import re
import ssl
import statistics
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from agent.planner import fingerprints
from probes.blockpages import BlockpageMatcher, Fingerprint
from probes.connection import Connection
from probes.http import HttpExpectations, run

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CLIENT_TLS = ssl.create_default_context()  # unused for http:// URLs


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def responder(*chunks: bytes, pause: float = 0.0) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                if pause:
                    await asyncio.sleep(pause)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


async def probe(port: int, path: str = "/", resolve=None, **expect: object):
    expect.setdefault("blockpages", BlockpageMatcher(fingerprints()))
    expectations = HttpExpectations(**expect)  # type: ignore[arg-type]
    return await run(
        Connection("127.0.0.1", port),
        urlsplit(f"http://site.test:{port}{path}"),
        ssl_context=CLIENT_TLS,
        timeout=1.5,
        expect=expectations,
        resolve=resolve,
    )


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"


@pytest.mark.parametrize(
    ("chunks", "code"),
    [
        ((b"HELLO THERE\r\n\r\n",), "http_error"),
        ((OK_HEAD + b"Content-Length: 100\r\n\r\nonly ten b",), "http_eof"),
        ((OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",), "http_error"),
        ((b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 100_000 + b"\r\n\r\n",), "http_error"),
        ((b"",), "http_eof"),
    ],
)
async def test_broken_responses_get_a_code(serve, chunks: tuple[bytes, ...], code: str) -> None:
    result = await probe(await serve(responder(*chunks)))
    assert result.result == code, result.detail
    assert result.detail


async def test_a_head_still_trickling_at_the_deadline_is_slow(serve) -> None:
    trickle = [b"HTTP/1.1 200 OK\r\n"] + [b"X-Slow: 1\r\n"] * 50
    result = await probe(await serve(responder(*trickle, pause=0.1)))
    assert result.result == "http_slow"
    assert "still arriving at" in result.detail
    assert result.facts.status is None  # the head never completed
    assert result.facts.received_bytes > 0


async def test_a_head_that_stops_halfway_has_stalled(serve) -> None:
    half = b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"
    result = await probe(await serve(responder(half, pause=3)))
    assert result.result == "http_timeout"
    assert result.detail.startswith(f"stalled after {len(half)} bytes (no data for")


async def test_body_reads_are_capped(serve) -> None:
    big = 3 << 20
    head = OK_HEAD + f"Content-Length: {big}\r\n\r\n".encode()
    result = await probe(await serve(responder(head, b"x" * big)), max_body=1 << 20)
    assert result.result == "ok"
    assert result.facts.truncated is True
    assert result.facts.body_bytes == 1 << 20


def redirect(location: str, status: int = 302) -> bytes:
    return f"HTTP/1.1 {status} Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()


async def test_redirect_loops_within_the_host_are_an_error(serve) -> None:
    result = await probe(await serve(responder(redirect("/again"))))
    assert result.result == "http_error"
    assert "redirects" in result.detail


@pytest.mark.parametrize("location", ["http://[::1", "http://site.test:99999/"])
async def test_malformed_redirects_are_an_error(serve, location: str) -> None:
    result = await probe(await serve(responder(redirect(location))))
    assert result.result == "http_error"
    assert "redirect" in result.detail


async def test_redirect_to_a_known_isp_blockpage_is_named(serve) -> None:
    port = await serve(responder(redirect("http://blocked.netbynet.ru/?url=site.test")))
    result = await probe(port)
    assert result.result == "http_blockpage"
    assert "ru-netbynet (RU)" in result.detail


async def test_redirect_to_another_host_is_reported_not_followed(serve) -> None:
    result = await probe(await serve(responder(redirect("https://elsewhere.example/"))))
    assert result.result == "ok"
    assert result.facts.redirect == "https://elsewhere.example/"


async def test_shipped_body_fingerprint_and_expectations(serve) -> None:
    page = b"<html><title>Federal block</title></html>"
    head = OK_HEAD + f"Content-Length: {len(page)}\r\n\r\n".encode()
    result = await probe(await serve(responder(head + page)))
    assert result.result == "http_blockpage"
    assert "ru-federal-block" in result.detail
    body = b"<title>Hello</title>"
    head = OK_HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode()
    port = await serve(responder(head + body))
    assert (await probe(port, body=re.compile("Goodbye"))).result == "http_body_mismatch"
    port = await serve(responder(head + body))
    assert (await probe(port, status=(204,))).result == "http_status_mismatch"
    port = await serve(responder(head + body))
    assert (await probe(port, status=(200,), body=re.compile("Hello"))).result == "ok"


async def test_request_looks_like_a_browser(serve) -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(OK_HEAD + b"Content-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    await probe(await serve(handle))
    request = seen[0].decode().lower()
    assert "user-agent: mozilla/5.0" in request
    assert "reachprobe" not in request
    assert "host: site.test:" in request


def page(body: bytes, content_type: str = "text/html") -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


async def test_a_charset_declared_only_in_meta_is_honoured(serve) -> None:
    """Russian ISP pages often declare windows-1251 only in <meta>: decoded as UTF-8 the
    Cyrillic fingerprint would never match."""
    # "access restricted", in Cyrillic
    text = "\u0414\u043e\u0441\u0442\u0443\u043f "
    text += "\u043e\u0433\u0440\u0430\u043d\u0438\u0447\u0435\u043d"
    body = f'<meta charset="windows-1251"><p>{text}</p>'.encode("cp1251")
    cyrillic = Fingerprint("ru-cyrillic", text, pattern_type="contains")
    port = await serve(responder(page(body)))
    result = await probe(port, blockpages=BlockpageMatcher([cyrillic]))
    assert result.result == "http_blockpage"
    assert "ru-cyrillic" in result.detail


async def test_cross_host_redirects_are_followed_through_the_resolver(serve) -> None:
    """Every hop is fingerprinted: the blockpage host's page is named even though the first
    response was a plain redirect, and the hops are in the facts."""
    lookups: list[str] = []
    blockpage = page(b"<title>Federal block</title>")
    landing = await serve(responder(blockpage))

    async def resolve(host: str) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    target = f"http://isp-landing.test:{landing}/blocked"
    result = await probe(await serve(responder(redirect(target))), resolve=resolve)
    assert lookups == ["isp-landing.test"]
    assert result.result == "http_blockpage"
    assert result.facts.redirects == (target,)


async def test_a_redirect_whose_host_does_not_resolve_is_reported(serve) -> None:
    async def resolve(host: str) -> list[str]:
        return []  # NXDOMAIN or a bogon answer: never connected to

    result = await probe(await serve(responder(redirect("http://gone.test/"))), resolve=resolve)
    assert result.result == "ok"
    assert result.facts.redirect == "http://gone.test/"
    assert result.facts.redirects == ()


async def test_a_dripping_body_is_fingerprinted_as_far_as_it_came(serve) -> None:
    head = OK_HEAD + b"Content-Length: 100000\r\n\r\n<title>Federal block</title>"
    result = await probe(await serve(responder(head, *([b"."] * 40), pause=0.1)))
    # Named, not timed out: the read stopped before the step's timeout (no clock asserted).
    assert result.result == "http_blockpage"


async def test_a_body_still_arriving_at_the_deadline_is_slow_not_stalled(serve) -> None:
    head = OK_HEAD + b"Content-Length: 100000\r\n\r\n<p>slow"
    result = await probe(await serve(responder(head, *([b"."] * 40), pause=0.1)))
    assert result.result == "http_slow"
    assert "B/s at the deadline" in result.detail
    facts = result.facts
    assert facts.status == 200
    assert facts.body_bytes > len(b"<p>slow")
    assert facts.received_bytes > facts.body_bytes  # the head counts on the wire
    assert facts.bytes_per_second is not None  # the throughput gauge's figure
    assert facts.first_byte_seconds is not None
    assert 0.05 < facts.longest_gap_seconds < 0.375  # reads every 0.1 s; the cut is no gap


async def test_a_body_that_freezes_says_after_how_many_bytes(serve) -> None:
    head = OK_HEAD + b"Content-Length: 100000\r\n\r\n"
    result = await probe(await serve(responder(head + b"x" * 5000, pause=3)))
    assert result.result == "http_timeout"
    wire = len(head) + 5000
    assert result.detail.startswith(f"stalled after {wire} bytes (no data for 1.")
    assert (result.facts.body_bytes, result.facts.received_bytes) == (5000, wire)
    assert result.facts.longest_gap_seconds > 1.0  # the silence it was cut in


async def test_a_page_title_is_kept_for_comparison(serve) -> None:
    result = await probe(await serve(responder(page(b"<title>  Hello\n world </title>"))))
    assert result.facts.title == "Hello world"


async def test_throughput_follows_the_pace_of_the_body(serve) -> None:
    """The same body, sent at once or in pauses: the slow one's figure is far lower. Medians of
    several probes each, compared as a ratio, so that a busy machine cannot decide it."""
    body = b"x" * (64 << 10)
    head = OK_HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode()
    pieces = [body[i : i + (8 << 10)] for i in range(0, len(body), 8 << 10)]
    fast_port = await serve(responder(head + body))
    slow_port = await serve(responder(head, *pieces, pause=0.03))

    async def median_rate(port: int) -> float:
        rates = []
        for _ in range(5):
            result = await probe(port)
            assert result.result == "ok", result.detail
            assert result.facts.body_bytes == len(body)
            rates.append(result.facts.bytes_per_second)
        return statistics.median(rates)

    assert await median_rate(fast_port) > 3 * await median_rate(slow_port)


def test_a_fingerprint_looks_only_where_it_says() -> None:
    """`body`, `headers` (the header block, one `Name: value` line each), one named header,
    or `any` (status line too): a text elsewhere in the response does not match."""
    matcher = BlockpageMatcher(
        [
            Fingerprint("in-body", re.compile("squid"), "body"),
            Fingerprint("in-headers", re.compile("^x-filter: on$", re.MULTILINE), "headers"),
            Fingerprint("via-header", re.compile("^proxy$"), "header:via"),
            Fingerprint("anywhere", re.compile("451"), "any"),
        ]
    )

    def named(status: str, headers: dict[str, str], body: str) -> str | None:
        found = matcher.match(status, headers, body)
        return found.name if found else None

    ok = "HTTP/1.1 200 OK"
    assert named(ok, {"server": "squid"}, "") is None
    assert named(ok, {}, "<p>squid</p>") == "in-body"
    assert named(ok, {"server": "x", "x-filter": "on"}, "") == "in-headers"
    assert named(ok, {}, "x-filter: on") is None
    assert named(ok, {"via": "proxy"}, "") == "via-header"
    assert named(ok, {"server": "proxy"}, "") is None
    assert named("HTTP/1.1 451 Unavailable", {}, "") == "anywhere"


async def test_the_raw_http_trigger_is_the_http_steps_own_request(serve) -> None:
    """One browser identity (probes/browser.py): the request the HTTP step puts on the wire
    is byte for byte the trigger the raw probes send for the same Host."""
    from probes.raw import packets  # scapy loads here only

    received: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(OK_HEAD + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    port = await serve(record)
    result = await probe(port)
    assert result.ok, result
    assert received == [packets.http_request(f"site.test:{port}")]
    assert b"Chrome/131" in received[0]
    assert b"reachprobe" not in received[0].lower()
