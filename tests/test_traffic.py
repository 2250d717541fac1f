"""docs/volunteers.md's "What the agent sends where" is the list `agent.traffic` derives from
the shipped config's plan (never by running the agent against it), and the list has words for
every kind of traffic a config can make."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from agent.config import load_config
from agent.planner import make_plan
from agent.traffic import traffic
from measure.plan import ProbePlan, TargetPlan
from probes.exchange import Exchange
from probes.taxonomy import Step

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "config" / "default.yaml"


def words(text: str) -> str:
    return " ".join(text.split())


def test_the_volunteer_guide_lists_what_the_shipped_config_sends() -> None:
    guide = (ROOT / "docs" / "volunteers.md").read_text(encoding="utf-8")
    section = re.search(r"<!-- traffic:[^>]*-->\n(.*?)<!-- /traffic -->", guide, re.S)
    assert section, "no generated traffic list in docs/volunteers.md"
    config = load_config(SHIPPED)
    expected = "\n".join(traffic(config, make_plan(config)))
    assert words(section[1]) == words(expected), "regenerate: python -m agent.traffic"


def test_every_kind_of_the_shipped_traffic_is_named() -> None:
    config = load_config(SHIPPED)
    text = words(" ".join(traffic(config, make_plan(config))))
    shipped = yaml.safe_load(SHIPPED.read_text())
    for needle in (
        "resolver this machine uses",  # resolvers.test: system
        shipped["resolvers"]["control"]["url"],
        shipped["vantage"]["tcp_canary"],
        f"random name under {shipped['vantage']['nxdomain_probe_suffix']}",
        "req_pq_multi",
        "149.154.167.51:443",
        "browser's",
        "redirects",
        "address the control resolver gave",
        "www.example.org",  # the SNI re-check
        "No raw packets",
    ):
        assert needle in text, needle


def test_raw_prefixes_and_push_get_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "agent": {"vantage": "t"},
                "resolvers": {"test": {"type": "udp", "servers": ["127.0.0.1:53"]}},
                "targets": [{"name": "a", "tcp": "127.0.0.1:9"}],
                "raw": {"enabled": True},
                "prefixes": [{"name": "p", "cidr": "127.0.0.0/30"}],
                "remote_write": {"url": "http://127.0.0.1:9/api/v1/write"},
            }
        )
    )
    config = load_config(path)
    text = words(" ".join(traffic(config, make_plan(config))))
    assert "Raw packets" in text
    assert "127.0.0.0/30 port 443" in text
    assert "http://127.0.0.1:9/api/v1/write" in text
    assert "resolver" not in text.split("To 1 target")[0], "no names, so no lookups"


def test_a_kind_of_traffic_without_words_fails() -> None:
    config = load_config(SHIPPED)
    plan = make_plan(config)
    # A plan field nobody has sorted into traffic or not.
    grown = dataclasses.make_dataclass(
        "Grown", [("quic", bool, True)], bases=(ProbePlan,), frozen=True, slots=True
    )
    with pytest.raises(ValueError, match="quic"):
        traffic(config, grown(**{f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}))
    # An exchange kind, or a step, with no words.
    odd = TargetPlan("odd", "", "tcp", "127.0.0.1", 9, exchange=Exchange("gopher"))
    with pytest.raises(ValueError, match="gopher"):
        traffic(config, dataclasses.replace(plan, targets=(odd,)))
    assert Step.TCP in odd.steps
