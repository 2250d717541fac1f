"""The `prefixes` section and `agent.prefix_seed`: accepted shapes and clearly named errors."""

from __future__ import annotations

import ipaddress

import pytest

from agent.config import ConfigError, parse_config
from measure.plan import DEFAULT_SEED
from measure.prefixes import probe_prefixes, sample
from simlab.net import closed_port


def problems(data: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "site.yaml")
    return dict(info.value.problems)


def test_prefixes_default_to_none_and_the_seed_to_the_documented_one() -> None:
    config = parse_config({}, "site.yaml")
    assert config.prefixes == []
    assert config.agent.prefix_seed == DEFAULT_SEED == "reachprobe-prefix-sampling-v1"


def test_prefix_entries_ipv4_and_ipv6_with_defaults() -> None:
    config = parse_config(
        {
            "agent": {"prefix_seed": "our-team-2026"},
            "prefixes": [
                {"name": "telegram-149.154.160.0-20", "cidr": "149.154.160.0/20"},
                {"name": "tg-v6", "cidr": "2001:67c:4e8::/48", "port": 80, "sample": 385},
            ],
        },
        "site.yaml",
    )
    first, second = config.prefixes
    assert first.cidr == ipaddress.ip_network("149.154.160.0/20")
    assert (first.port, first.sample) == (443, 16)
    assert second.cidr.version == 6
    assert (second.port, second.sample) == (80, 385)
    assert config.agent.prefix_seed == "our-team-2026"


@pytest.mark.parametrize(
    ("entry", "path", "needle"),
    [
        ({"name": "a b", "cidr": "10.0.0.0/8"}, "prefixes[0].name", "not a valid name"),
        ({"name": "a", "cidr": "10.0.0.1/8"}, "prefixes[0].cidr", "host bits"),
        ({"name": "a", "cidr": "telegram"}, "prefixes[0].cidr", "not a network"),
        ({"name": "a", "cidr": "10.0.0.0/8", "port": 0}, "prefixes[0].port", "greater than"),
        ({"name": "a", "cidr": "10.0.0.0/8", "sample": 0}, "prefixes[0].sample", "greater than"),
        ({"name": "a", "cidr": "10.0.0.0/8", "sample": 4097}, "prefixes[0].sample", "less than"),
        ({"name": "a", "cidr": "10.0.0.0/8", "every": 2}, "prefixes[0].every", "unknown key"),
        ({"cidr": "10.0.0.0/8"}, "prefixes[0].name", "missing"),
    ],
)
def test_bad_prefix_entries_are_named(entry: dict[str, object], path: str, needle: str) -> None:
    found = problems({"prefixes": [entry]})
    assert path in found, found
    assert needle in found[path]


def test_prefix_names_are_unique() -> None:
    entry = {"name": "p", "cidr": "10.0.0.0/8"}
    found = problems({"prefixes": [entry, {**entry, "cidr": "11.0.0.0/8"}]})
    assert "two prefixes are named 'p'" in found["prefixes"]


def test_empty_seed_is_rejected() -> None:
    assert "at least 1" in problems({"agent": {"prefix_seed": ""}})["agent.prefix_seed"]


async def test_the_config_section_is_what_probe_prefixes_takes() -> None:
    """The agent hands `config.prefixes` and the seed straight to the sampler."""
    port = closed_port("127.0.0.1")
    config = parse_config(
        {"prefixes": [{"name": "lo", "cidr": "127.0.0.0/24", "port": port, "sample": 3}]}, "x"
    )
    [result] = await probe_prefixes(config.prefixes, config.agent.prefix_seed, 7, 2.0, 4)
    assert (result.name, result.cidr, result.results) == ("lo", "127.0.0.0/24", {"tcp_refused": 3})
    assert [o.address for o in result.outcomes] == sample("127.0.0.0/24", 3, DEFAULT_SEED, 7)
