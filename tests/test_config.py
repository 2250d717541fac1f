"""Config loading: the shape in README's config reference, strict keys, clear errors."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from agent.config import ConfigError, load_config, parse_config, split_host_port
from agent.durations import parse_duration
from agent.planner import make_plan


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def problems(tmp_path: Path, data: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    return info.value.problems


def test_builtin_default_config_loads_and_listens_on_loopback() -> None:
    config = load_config()
    assert config.agent.listen_address == ("127.0.0.1", 9787)
    names = {t.name for t in config.targets}
    assert {"telegram-web", "telegram-dc2-443", "twitch", "slack", "spotify"} <= names
    assert config.resolvers.control is not None
    assert config.resolvers.control.type == "doh"


def test_full_design_shape_is_accepted(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder")
    config = load_config(
        write(
            tmp_path,
            {
                "agent": {
                    "vantage": "ru-msk-1", "role": "test", "country": "RU", "asn": "AS12389",
                    "listen": "127.0.0.1:9999", "interval": "1m", "timeout": "500ms",
                    "concurrency": 8,
                },
                "resolvers": {
                    "test": {"type": "udp", "servers": ["192.0.2.53", "[2001:db8::53]:5353"]},
                    "control": {"type": "doh", "url": "https://dns.example/dns-query"},
                    "bogon_exempt": ["198.18.0.0/15"],
                },
                "tls": {"ca_file": "ca.pem"},
                "targets": [
                    {"name": "telegram-web", "url": "https://web.telegram.org/"},
                    {"name": "telegram-dc2", "tcp": "149.154.167.51:443", "group": "telegram"},
                    {"name": "smtp", "host": "mail.example", "port": 465, "tls": True},
                ],
                "blockpages": [{"name": "isp", "pattern": "rkn\\.gov\\.ru"}],
            },
        )
    )  # fmt: skip
    assert config.agent.interval == 60
    assert config.agent.timeout == 0.5
    assert config.resolvers.test.endpoints() == (("192.0.2.53", 53), ("2001:db8::53", 5353))
    assert config.tls.ca_file == ca  # relative to the config file's folder
    plans = make_plan(config).targets
    assert [t.scheme for t in plans] == ["https", "tcp", "tls"]
    assert [t.port for t in plans] == [443, 443, 465]


def test_errors_name_file_key_path_and_reason(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "agent": {"interval": "10x", "colour": "blue"},
            "resolvers": {"test": {"type": "doh"}},
            "targets": [
                {"name": "ok", "url": "https://a.example/"},
                {"name": "bad", "url": "ftp://a.example/"},
                {"name": "nohost", "port": 443},
            ],
        },
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    for line in text.splitlines():
        assert line.startswith(f"{path}: ")
    paths = dict(info.value.problems)
    assert "is not a duration" in paths["agent.interval"]
    assert paths["agent.colour"] == "unknown key"
    assert "needs url" in paths["resolvers.test"]
    assert "not an http(s)" in paths["targets[1].url"]
    assert "exactly one of" in paths["targets[2]"]


@pytest.mark.parametrize(
    ("data", "path", "needle"),
    [
        ({"targets": [{"name": "a b", "tcp": "1.2.3.4:1"}]}, "targets[0].name", "not a valid name"),
        ({"targets": [{"name": "a", "tcp": "1.2.3.4"}]}, "targets[0].tcp", "port is required"),
        ({"targets": [{"name": "a", "tcp": "x.example:1"}]}, "targets[0].tcp", "not an IP"),
        (
            {"targets": [{"name": "a", "url": "https://x/", "expect_body": "("}]},
            "targets[0].expect_body",
            "regular expression",
        ),
        (
            {"targets": [{"name": "a", "tcp": "1.2.3.4:1", "expect_status": [200]}]},
            "targets[0]",
            "need a url target",
        ),
        (
            {"targets": [{"name": "a", "tcp": "1.2.3.4:1"}, {"name": "a", "tcp": "1.2.3.4:2"}]},
            "targets",
            "unique",
        ),
        ({"resolvers": {"bogon_exempt": ["10.0.0.1/8"]}}, "resolvers.bogon_exempt[0]", "host bits"),
        ({"resolvers": {"test": {"type": "udp"}}}, "resolvers.test", "needs servers"),
        ({"resolvers": {"test": {"type": "udp", "servers": ["dns.example"]}}}, "resolvers.test",
         "not an IP"),
        ({"resolvers": {"test": {"type": "carrier-pigeon"}}}, "resolvers.test.type", "'system'"),
        ({"agent": {"listen": "localhost:9787"}}, "agent.listen", "not an IP"),
        ({"agent": {"timeout": "2m", "interval": "1m"}}, "agent", "longer than interval"),
        ({"agent": {"role": "observer"}}, "agent.role", "'test'"),
        ({"agent": {"concurrency": 0}}, "agent.concurrency", "greater than or equal to 1"),
        ({"tls": {"ca_file": "missing.pem"}}, "tls.ca_file", "does not exist"),
        ({"blockpages": [{"name": "x", "pattern": "["}]}, "blockpages[0].pattern", "regular"),
        ({"blockpages": [{"name": "x", "pattern": "a", "location": "header:X-Up"}]},
         "blockpages[0].location", "header:<lowercase-name>"),
    ],
)  # fmt: skip
def test_each_bad_key_is_named(tmp_path: Path, data: object, path: str, needle: str) -> None:
    found = dict(problems(tmp_path, data))
    assert path in found, found
    assert needle in found[path]


def test_a_bad_location_is_told_every_choice(tmp_path: Path) -> None:
    data = {"blockpages": [{"name": "x", "pattern": "a", "location": "footer"}]}
    assert problems(tmp_path, data) == [
        ("blockpages[0].location", "location is any, body, headers or header:<lowercase-name>")
    ]


@pytest.mark.parametrize("location", ["any", "body", "headers", "header:x-squid-error"])
def test_blockpage_locations(location: str) -> None:
    config = parse_config(
        {"blockpages": [{"name": "x", "pattern": "a", "location": location}]}, "test.yaml"
    )
    assert config.blockpages[0].location == location


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    [(path, why)] = problems(tmp_path, "agent:\n  vantage: [unclosed\n")
    assert path == ""
    assert why.startswith("invalid YAML: line ")


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    assert problems(tmp_path, "- just\n- a list\n") == [
        ("", "the top level must be a mapping of sections")
    ]


def test_an_empty_mapping_is_the_all_defaults_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "{}\n"))
    assert config.targets == []
    assert config.resolvers.test.type == "system"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10),
        ("5m", 300),
        ("1h30m", 5400),
        ("2", 2),
        (1.5, 1.5),
        ("1d", 86400),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10x", "ms", "-1s", "1.5.3s", True, None, [1]])
def test_bad_durations_are_rejected(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(0, 10**6), st.sampled_from(["ms", "s", "m", "h"]))
def test_duration_units_scale(n: int, unit: str) -> None:
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * factor)


@given(st.text(max_size=40))
def test_duration_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert parse_duration(text) >= 0


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_arbitrary_yaml_data_gives_config_or_config_error(data: object) -> None:
    try:
        parse_config(data, "fuzz.yaml")
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert message.startswith("fuzz.yaml: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.2.3.4:80", ("1.2.3.4", 80)), ("[::1]:53", ("::1", 53)), ("::1", ("::1", 53)),
     ("10.0.0.1", ("10.0.0.1", 53))],
)  # fmt: skip
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text, 53) == expected
