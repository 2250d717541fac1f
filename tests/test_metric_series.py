"""The per-target series from the custom collector are the ones the prometheus_client label
children exported: the same names, types, labels and values for a fixed set of reports
(tests/fixtures/metric_series.txt was written by the label-children sink of commit e1e1e31),
and its fast rendering is byte for byte what prometheus_client's own encoders write."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from agent.config import parse_config
from agent.planner import make_plan
from agent.sinks.prometheus import PrometheusSink
from agent.sinks.prometheus.exposition import RowFamily, encode
from tests.metric_reports import CONFIG, PLAN, cycles

GOLDEN = Path(__file__).parent / "fixtures" / "metric_series.txt"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# Set from the clock when the sink starts: its value is no contract.
CLOCK = "reachprobe_config_last_reload_success_timestamp_seconds "


def series(text: str) -> list[str]:
    """The TYPE lines and the samples of an exposition, sorted (order is no contract)."""
    lines = []
    for line in text.splitlines():
        if line.startswith(CLOCK):
            line = CLOCK + "(clock)"
        if line.startswith("# TYPE") or not line.startswith("#"):
            lines.append(line)
    return sorted(lines)


def published() -> PrometheusSink:
    sink = PrometheusSink()
    sink.configure(CONFIG, PLAN)
    for cycle in cycles():
        sink.publish(cycle)
    return sink


def test_the_series_are_those_the_label_children_exported() -> None:
    body, _ = encode(published().registry, "")
    assert series(body.decode()) == GOLDEN.read_text().splitlines()


@pytest.mark.parametrize("accept", ["", "text/plain; version=0.0.4", OPENMETRICS])
def test_the_fast_rendering_is_the_encoders_own(accept: str) -> None:
    registry = published().registry
    encoder, content_type = choose_encoder(accept)
    assert encode(registry, accept) == (encoder(registry), content_type)


def test_label_values_are_escaped_as_the_encoders_do() -> None:
    rows = [(("a\\b", 'say "hi"\n'), 1.5), (("plain", "x"), float("nan"))]
    registry = CollectorRegistry()

    class Rows:
        def collect(self) -> list[RowFamily]:
            return [RowFamily("odd", "Odd label values.", "counter", ("z", "a"), lambda: rows)]

    registry.register(Rows())
    for accept in ("", OPENMETRICS):
        encoder, _ = choose_encoder(accept)
        assert encode(registry, accept)[0] == encoder(registry)
    assert b'odd_total{a="say \\"hi\\"\\n",z="a\\\\b"} 1.5\n' in encode(registry, "")[0]


def test_a_removed_target_loses_its_series_and_a_kept_one_its_counts_stay() -> None:
    sink = published()
    kept = parse_config({"targets": [{"name": "raw-tcp", "tcp": "192.0.2.1:443"}]}, "t.yaml")
    sink.configure(kept, make_plan(kept))
    text = encode(sink.registry, "")[0].decode()
    assert 'target="site"' not in text
    assert 'target="plain"' not in text
    results = "reachprobe_probe_results_total"
    assert f'{results}{{result="ok",step="tcp",target="raw-tcp"}} 1.0' in text
    assert f'{results}{{result="tcp_timeout",step="tcp",target="raw-tcp"}} 1.0' in text
