"""OONI's own data package loads every line of the measurement log of real demo-world cycles,
into the model its tools dispatch on, with the test keys intact (issue 23)."""

from __future__ import annotations

from pathlib import Path

from agent.sinks.measurement_log import MeasurementLogSink
from tests.demo_world import cycle_of, demo_agent
from tests.ooni_log import load_log

CYCLES = 2


async def test_oonidata_loads_every_line_of_the_demo_log(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    sink = MeasurementLogSink()
    async with demo_agent(tmp_path, measurement_log={"path": str(path)}) as (config, prober):
        sink.configure(config, prober.plan)
        for number in range(1, CYCLES + 1):
            sink.publish(await cycle_of(prober, number))
    await sink.aclose()
    loaded = load_log(path)
    assert len(loaded) == CYCLES * len(prober.plan.targets)
    by_name = {record["test_keys"]["target"]: model for record, model in loaded}
    # The demo's SNI-filtered messenger, as OONI's tools read it.
    messenger = by_name["messenger"]
    assert messenger["test_name"] == "web_connectivity"
    assert messenger["probe_ip"] == "127.0.0.1"
    assert messenger["annotations"]["cycle"] == "2"
    handshake = messenger["test_keys"]["tls_handshakes"][0]
    assert (handshake["server_name"], handshake["failure"]) == (
        "messenger.test",
        "connection_reset",
    )
    assert messenger["test_keys"]["blocking"] == "http-failure"
    news = by_name["news"]["test_keys"]
    assert news["queries"][0]["answers"][0].get("ttl") is not None
    assert news["requests"][0]["response"]["code"] == 200
    assert news["tls_handshakes"][0]["peer_certificates"]
    assert by_name["poisoned"]["test_keys"]["dns_experiment_failure"] == "dns_bogon_error"
    # Every record of one cycle shares its report id; the next cycle has its own.
    assert len({model["report_id"] for model in by_name.values()}) == 1
    assert len({model["report_id"] for _, model in loaded}) == CYCLES
