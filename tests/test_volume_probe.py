"""The volume probe (issue 22): `min_bytes` on a target, or as its group's default, reads at
least that many body bytes, so that a data-volume freeze (a connection cut for good after
about 16 KB from the server) shows on a target whose small page would arrive whole."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.planner import make_plan
from probes.http import DEFAULT_VOLUME_BYTES
from simlab import Zone, start_dns, start_web
from tests.test_hostile_networks import cycle
from tests.test_http_hostile import OK_HEAD, read_request

HOST = "127.0.0.1"
FREEZE = 16 * 1024


def plan_of(targets: list[dict[str, object]], groups: dict[str, object] | None = None):
    data = {"targets": targets, **({"groups": groups} if groups is not None else {})}
    return make_plan(parse_config(data, "test.yaml"))


def test_the_default_crosses_the_freeze_threshold() -> None:
    assert DEFAULT_VOLUME_BYTES > FREEZE


def test_a_group_default_applies_unless_the_target_sets_its_own() -> None:
    plan = plan_of(
        [
            {"name": "big", "url": "https://cdn.test/big.bin", "group": "cdn"},
            {"name": "own", "url": "https://cdn.test/x.bin", "group": "cdn", "min_bytes": 4096},
            {"name": "page", "url": "https://site.test/"},
        ],
        {"cdn": {"min_bytes": True, "range": True}},
    )
    http = {t.name: t.http for t in plan.targets}
    assert (http["big"].min_bytes, http["big"].ranged) == (DEFAULT_VOLUME_BYTES, True)
    assert (http["own"].min_bytes, http["own"].ranged) == (4096, False)
    assert (http["page"].min_bytes, http["page"].ranged) == (None, False)


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ({"name": "t", "tcp": "192.0.2.1:443", "min_bytes": 4096}, "min_bytes needs a url"),
        ({"name": "t", "url": "https://a.test/", "range": True}, "range needs min_bytes"),
        ({"name": "t", "url": "https://a.test/", "min_bytes": 0}, "min_bytes"),
    ],
)
def test_bad_volume_options_are_named(target: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config({"targets": [target]}, "test.yaml")


def freezing(size: int, seen: list[bytes] | None = None):
    """A server announcing a 1 MB body that sends `size` bytes of it and then goes silent
    (a data-volume freeze as the client sees it); `seen` collects the requests."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if seen is not None:
            seen.append(request)
        head = OK_HEAD + f"Content-Length: {1 << 20}\r\n\r\n".encode()
        writer.write((head + b"x" * (1 << 20))[:size])
        await writer.drain()
        await asyncio.sleep(5)
        writer.close()

    return handle


async def test_a_freeze_hides_under_a_small_page_and_shows_to_the_volume_probe(
    servers,
    serve,
    tmp_path: Path,
) -> None:
    small = await servers(start_web, "valid", HOST)
    requests: list[bytes] = []
    frozen = await serve(freezing(FREEZE, requests))
    dns_server = await servers(start_dns, Zone({"small.test": [HOST], "big.test": [HOST]}))
    targets = [
        {"name": "page", "url": f"http://small.test:{small.port}/"},
        {"name": "large", "url": f"http://big.test:{frozen}/big.bin", "min_bytes": True,
         "range": True},
    ]  # fmt: skip
    result = await cycle(targets, dns_server.port, timeout="2s")
    http = {r.target.name: r.chains[0][-1] for r in result.reports}
    assert http["page"].result == "ok"
    assert http["large"].result == "http_timeout"
    assert http["large"].detail.startswith(f"stalled after {FREEZE} bytes (no data for")
    assert http["large"].facts.received_bytes == FREEZE
    assert b"\r\nRange: bytes=0-65535\r\n" in requests[0]


async def test_a_volume_probe_that_moves_enough_says_so(servers) -> None:
    web = await servers(start_web, "valid", HOST, body="y" * (DEFAULT_VOLUME_BYTES * 2))
    dns_server = await servers(start_dns, Zone({"big.test": [HOST]}))
    target = [{"name": "large", "url": f"http://big.test:{web.port}/", "min_bytes": True}]
    result = await cycle(target, dns_server.port)
    http = result.reports[0].chains[0][-1]
    assert (http.result, http.facts.truncated) == ("ok", True)
    # Read as far as the wire brought min_bytes, not to the end of the page.
    assert DEFAULT_VOLUME_BYTES <= http.facts.received_bytes < DEFAULT_VOLUME_BYTES * 2
    assert "bytes received (volume probe)" in http.detail


async def test_an_object_smaller_than_min_bytes_is_said_to_be(servers) -> None:
    web = await servers(start_web, "valid", HOST)
    dns_server = await servers(start_dns, Zone({"big.test": [HOST]}))
    target = [{"name": "large", "url": f"http://big.test:{web.port}/", "min_bytes": True}]
    result = await cycle(target, dns_server.port)
    http = result.reports[0].chains[0][-1]
    assert http.result == "ok"
    assert f"the object ended after {http.facts.received_bytes} of min_bytes" in http.detail
