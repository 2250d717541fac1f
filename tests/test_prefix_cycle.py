"""Prefix sampling inside the agent's cycle: the sample's outcome reaches the JSON document
and the metrics, and only the addresses that listen count as reachable."""

from __future__ import annotations

import asyncio
import json

import pytest

from agent.config import parse_config
from agent.once import measure_once
from agent.planner import syn_scan_allowed
from agent.sinks.console import to_json
from agent.sinks.prometheus import PrometheusSink


@pytest.mark.parametrize("method", ["connect", "syn"])
async def test_a_prefix_sample_is_reported_by_json_and_metrics(method: str) -> None:
    if method == "syn" and not syn_scan_allowed():
        pytest.skip("the syn method needs CAP_NET_RAW (root)")
    # Every 127.x address is this machine: one listener on the wildcard address answers the
    # whole /28, as a routed prefix's single responder does in the lab.
    server = await asyncio.start_server(lambda r, w: w.close(), "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    prefixes = [
        {"name": "up", "cidr": "127.77.0.0/28", "port": port, "sample": 8},
        {"name": "closed", "cidr": "127.78.0.0/28", "port": port + 1, "sample": 4},
    ]
    for prefix in prefixes:
        prefix["method"] = method
    config = parse_config(
        {
            "agent": {"timeout": "1s", "listen": None},
            "resolvers": {"test": {"type": "udp", "servers": ["127.0.0.1:9"]}},
            "prefixes": prefixes,
        },
        "t.yaml",
    )
    try:
        cycle = (await measure_once(config)).cycle
    finally:
        server.close()
    doc = json.loads(to_json(config.agent, cycle))
    by_name = {p["name"]: p for p in doc["prefixes"]}
    assert by_name["up"]["sampled"] == 8
    assert by_name["up"]["method"] == by_name["closed"]["method"] == method
    assert by_name["up"]["ratio"] == 1.0
    assert by_name["closed"]["reachable"] == 0
    assert by_name["closed"]["results"] == {"tcp_refused": 4}
    assert 0 < by_name["up"]["ci_low"] < 1 == by_name["up"]["ci_high"]
    metrics = PrometheusSink()
    metrics.publish(cycle)
    sample = metrics.registry.get_sample_value
    assert sample("reachprobe_prefix_reachable_ratio", {"prefix": "up"}) == 1.0
    assert (
        sample("reachprobe_prefix_probes_total", {"prefix": "closed", "result": "tcp_refused"}) == 4
    )
