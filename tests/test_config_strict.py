"""Strict config validation: empty files, duplicate keys, and reasons in the user's words."""

from __future__ import annotations

import contextlib
import gc
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import agent.config
from agent.config import Config, ConfigError, load_config, parse_config
from agent.config.loader import read_yaml
from agent.config.web import load_web_config

TARGET = {"name": "a", "tcp": "192.0.2.1:443"}


def problems_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def reasons(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "t.yaml")
    return info.value.problems


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n", "---\n", "~\n"])
def test_an_empty_config_file_is_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    [(key, why)] = problems_of(path)
    assert key == ""
    assert why.startswith("the file is empty")
    assert "reachprobe config default" in why


def test_an_empty_web_config_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text("# TODO\n")
    with pytest.raises(ConfigError, match="the file is empty: a web config needs"):
        load_web_config(path)


def test_two_top_level_blocks_name_the_key_and_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("agent:\n  vantage: a\ntargets: []\nagent:\n  vantage: b\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        (
            "agent",
            "duplicate key on line 4 (first on line 1): write each key once; "
            "YAML would keep only the last",
        )
    ]
    assert str(info.value).startswith(f"{path}: agent: duplicate key on line 4")


def test_duplicate_keys_at_any_depth_are_each_named(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "resolvers:\n"
        "  test: {type: udp, servers: [127.0.0.1], type: tcp}\n"
        "targets:\n"
        "  - name: a\n"
        "    tcp: 192.0.2.1:443\n"
        "  - name: b\n"
        "    tcp: 192.0.2.2:443\n"
        "    exchange:\n"
        "      send: x\n"
        "      send: y\n"
    )
    found = problems_of(path)
    assert [key for key, _ in found] == ["resolvers.test.type", "targets[1].exchange.send"]
    assert "line 2 (earlier on the same line)" in found[0][1]
    assert "line 10 (first on line 9)" in found[1][1]


def test_the_same_value_twice_and_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "base: &target {tcp: 192.0.2.1:443, group: g}\n"
        "targets:\n"
        "  - {<<: *target, name: a}\n"
        "  - {<<: *target, name: b, group: h}\n"
    )
    # `base` is an unknown key; the point is that the merges are no duplicate key.
    assert problems_of(path) == [("base", "unknown key")]


def test_duplicate_keys_in_a_web_config_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text("basic_auth_users:\n  a: x\n  a: y\n")
    with pytest.raises(ConfigError, match=r"basic_auth_users\.a: duplicate key on line 3"):
        load_web_config(path)


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        (
            {"targets": [{**TARGET, "exchange": "mtprot"}]},
            "targets[0].exchange",
            "'mtprot' is not an exchange: use `mtproto`, or a mapping with send, expect and "
            "max_reply",
        ),
        (
            {"targets": [{**TARGET, "exchange": {"expect": "("}}]},
            "targets[0].exchange.expect",
            "not a valid regular expression: missing ), unterminated subpattern at position 0",
        ),
        ({"targets": [{**TARGET, "exchange": {"sned": "x"}}]}, "targets[0].exchange.sned",
         "unknown key"),
        (
            {"agent": {"country": "ru"}},
            "agent.country",
            "'ru' is not a country code: use two capital letters (ISO 3166-1, e.g. RU) or "
            "leave it empty",
        ),
        ({"agent": {"asn": "ASN-12"}}, "agent.asn",
         "'ASN-12' is not an AS number: write it as AS12389 (or 12389)"),
        ({"targets": ["a"]}, "targets[0]",
         "must be a mapping of keys (key: value), not text ('a')"),
        ({"agent": {"vantage": 5}}, "agent.vantage", "must be text, not a number (5)"),
        ({"agent": {"role": "tset"}}, "agent.role",
         "must be 'test' or 'control', not text ('tset')"),
        ({"agent": {"concurrency": 0}}, "agent.concurrency", "must be greater than or equal to 1"),
        ({"agent": {"prefix_seed": ""}}, "agent.prefix_seed", "must have at least 1 character"),
        ({"targets": [{"name": "a", "url": "https://a.test/", "min_bytes": "lots"}]},
         "targets[0].min_bytes", "must be true or a whole number, not text ('lots')"),
        ({"targets": [{**TARGET, "expect_status": [99]}]}, "targets[0].expect_status[0]",
         "must be greater than or equal to 100"),
        ({"vantage": {"canary_group": ""}}, "vantage.canary_group",
         "'' is not a valid group name: use 1-64 letters, digits, '_', '.', ':' or '-'"),
        ({"targets": [{**TARGET, "group": "a b"}]}, "targets[0].group",
         "'a b' is not a valid group name: use up to 64 letters, digits, '_', '.', ':' or '-'"),
    ],
)  # fmt: skip
def test_reasons_are_in_the_users_words(data: dict[str, Any], key: str, reason: str) -> None:
    assert reasons(data) == [(key, reason)]


@pytest.mark.parametrize(("written", "stored"), [(12389, "AS12389"), ("12389", "AS12389"),
                                                 ("as12389", "AS12389"), ("", "")])  # fmt: skip
def test_an_as_number_may_be_written_as_a_number(written: object, stored: str) -> None:
    assert parse_config({"agent": {"asn": written}}, "t.yaml").agent.asn == stored


def _model_names() -> set[str]:
    return {
        name
        for name in agent.config.__all__
        if isinstance(getattr(agent.config, name), type)
        and issubclass(getattr(agent.config, name), BaseModel)
    }


# What pydantic would say in its own words: its message stems, its union member tags and the
# models' class names.
_LEAKS = re.compile(r"\bshould\b|literal\[|pattern '|function-|" + "|".join(sorted(_model_names())))
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _section(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(sorted(model.model_fields)), _VALUES, max_size=4)


_SECTIONS = {
    "agent": _section(agent.config.AgentSection),
    "resolvers": _section(agent.config.ResolversSection),
    "vantage": _section(agent.config.VantageSection),
    "raw": _section(agent.config.RawSection),
    "remote_write": _section(agent.config.RemoteWriteConfig),
    "targets": st.lists(_section(agent.config.TargetConfig), max_size=3),
    "prefixes": st.lists(_section(agent.config.PrefixConfig), max_size=2),
    "blockpages": st.lists(_section(agent.config.BlockpageConfig), max_size=2),
}


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional=_SECTIONS))
def test_no_reason_shows_the_validation_librarys_internals(data: dict[str, Any]) -> None:
    try:
        parse_config(data, "t.yaml")
    except ConfigError as exc:
        for key, why in exc.problems:
            assert not _LEAKS.search(f"{key}: {why}"), (key, why)


def test_the_models_listed_for_the_leak_check_are_the_real_ones() -> None:
    assert {"Config", "AgentSection", "TargetConfig", "ExchangeConfig"} <= _model_names()
    assert issubclass(Config, BaseModel)


@pytest.mark.parametrize("text", ["targets: []\n", "agent: [\n", ""])
def test_loading_leaves_the_garbage_collector_as_it_was(tmp_path: Path, text: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            with contextlib.suppress(ConfigError):
                load_config(path)
            assert gc.isenabled() is enabled
        finally:
            gc.enable()


_KEYS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1,
                max_size=5)  # fmt: skip
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_KEYS, _TREES, min_size=1, max_size=4))
def test_a_file_without_duplicates_reads_as_yaml_reads_it(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]
) -> None:
    path = tmp_path_factory.mktemp("yaml") / "any.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert read_yaml(path, "empty") == yaml.safe_load(path.read_text(encoding="utf-8"))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(_KEYS, _TREES, min_size=1, max_size=4),
    st.lists(st.sampled_from(["mapping", "list"]), max_size=3),
)
def test_a_key_written_again_at_any_depth_is_named(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any], nesting: list[str]
) -> None:
    """`data` in block style with its first key written once more at the end, the whole
    nested in `nesting` (outermost first): under `outer:` or as a list's first item."""
    key = next(iter(data))
    lines = yaml.safe_dump(data, allow_unicode=True, width=10**6).splitlines()
    lines += yaml.safe_dump({key: None}, allow_unicode=True, width=10**6).splitlines()
    for step in reversed(nesting):
        if step == "mapping":
            lines = ["outer:", *("  " + line for line in lines)]
        else:
            lines = ["- " + lines[0], *("  " + line for line in lines[1:])]
    path = ""
    for step in nesting:
        path = (f"{path}.outer" if path else "outer") if step == "mapping" else f"{path}[0]"
    file = tmp_path_factory.mktemp("yaml") / "dup.yaml"
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_yaml(file, "empty")
    [(where, why)] = info.value.problems
    assert where == (f"{path}.{key}" if path else key), lines
    assert why.startswith(f"duplicate key on line {len(lines)} "), lines
