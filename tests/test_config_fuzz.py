"""Fuzzing the config loader: whatever a volunteer writes, the answer is a Config or a ConfigError.

Structures are YAML-shaped (what `yaml.safe_load` can return) and biased toward the real keys,
so that hypothesis reaches the validators rather than stopping at "unknown key".
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import Config, ConfigError, load_config, parse_config

KEYS = [
    "agent", "resolvers", "tls", "targets", "blockpages", "vantage", "role", "country", "asn",
    "listen", "interval", "timeout", "jitter", "concurrency", "max_addresses", "max_body_bytes",
    "web_config", "insecure_listen", "test", "control", "bogon_exempt", "injection_window",
    "type", "servers", "url", "server_name", "ca_file", "name", "host", "port", "tcp", "group",
    "expect_status", "expect_body", "pattern", "location", "source",
]  # fmt: skip
WORDS = [
    "test", "control", "udp", "tcp", "dot", "doh", "system", "https://127.0.0.1/dns-query",
    "http://a.test/", "127.0.0.1", "127.0.0.1:53", "[::1]:53", "::1", "0.0.0.0:9787",
    "10s", "500ms", "1h30m", "0", "-1s", ".nan", "RU", "AS1", "any", "body", "header:x",
    "127.0.0.0/8", "1.2.3.4/33", "(", "a" * 200, "é", "\x00", "9" * 400,
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(WORDS),
    st.dates(),
    st.datetimes(),
    st.binary(max_size=8),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=10), st.integers(), st.booleans())
yamlish = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=40,
)
# The top level mostly as a config is shaped: sections with mostly real keys.
section = st.dictionaries(st.sampled_from(KEYS), yamlish, max_size=6)
configs = st.one_of(
    yamlish,
    st.fixed_dictionaries(
        {},
        optional={
            "agent": section,
            "resolvers": section,
            "tls": section,
            "targets": st.lists(section, max_size=4),
            "blockpages": st.lists(section, max_size=3),
        },
    ),
)


def outcome(load: Callable[..., Config], *args: Any) -> Config | ConfigError:
    """What loading gives: the Config or the ConfigError (any other exception propagates)."""
    try:
        return load(*args)
    except ConfigError as exc:
        return exc


def check_accepted(config: Config) -> None:
    """What any accepted config promises the scheduler."""
    agent = config.agent
    durations = [agent.interval, agent.timeout, agent.effective_jitter]
    durations.append(config.resolvers.injection_window)
    assert all(math.isfinite(d) and d >= 0 for d in durations), durations
    assert 0 < agent.timeout <= agent.interval


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_any_structure_is_a_config_or_a_config_error(data: Any) -> None:
    result = outcome(parse_config, data, "fuzz.yaml")
    if isinstance(result, ConfigError):
        assert str(result).startswith("fuzz.yaml: ")
        assert result.problems
    else:
        check_accepted(result)


yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.one_of(st.sampled_from([*KEYS, *WORDS, ":", "- ", "{", "}", "[", "]", "\n", "  ",
                                   "&a", "*a", "!!python/object:os.system", "%YAML 1.1", "---"]),
                  st.text(max_size=5)),
        max_size=40,
    ).map("".join),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_text)
def test_any_file_text_is_a_config_or_a_config_error(tmp_path_factory: Any, text: str) -> None:
    path: Path = tmp_path_factory.mktemp("fuzz") / "agent.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = outcome(load_config, path)
    if isinstance(result, ConfigError):
        assert str(result).startswith(f"{path}: ")
    else:
        check_accepted(result)


@pytest.mark.parametrize("value", [math.nan, math.inf, "9" * 400, datetime.date(2024, 1, 1)])
def test_non_finite_and_odd_durations_are_refused(value: object) -> None:
    # Found by the fuzzer: YAML's .nan and .inf were accepted as an interval.
    with pytest.raises(ConfigError, match=r"agent\.interval"):
        parse_config({"agent": {"interval": value}}, "f")


@pytest.mark.parametrize("value", [1, True, 3.5, None])
def test_bogon_exempt_networks_are_strings(value: object) -> None:
    # Found by the fuzzer: pydantic read the integer 1 as the network 0.0.0.1/32.
    with pytest.raises(ConfigError, match=r"resolvers\.bogon_exempt\[0\]"):
        parse_config({"resolvers": {"bogon_exempt": [value]}}, "f")
