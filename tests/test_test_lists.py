"""Citizen Lab test lists as a target source (`targets_from`): names from the URL, categories
as groups and filters, duplicates merged, bad rows named by file and line, and a real `check`
on loopback driven by a list. The lists here are small ones of our own in Citizen Lab's format
(their lists are CC BY-NC-SA: the repository ships no copy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import ConfigError, parse_config
from agent.config.test_lists import target_name
from simlab.loopback import LoopbackLab
from tests.test_check_loopback import check_json

HEADER = "url,category_code,category_description,date_added,source,notes\n"
RU = HEADER + (
    "https://news.example.org/,NEWS,News Media,2014-04-15,citizenlab,\n"
    "https://rights.example.org/reports/2024?lang=ru,HUMR,Human Rights Issues,2017-09-12,,\n"
    'http://lgbt.example.org/,LGBT,LGBT,2016-01-01,citizenlab,"a note, with a comma"\n'
    "https://vpn.example.org/,ANON,Anonymization and circumvention tools,2019-01-01,,\n"
)
GLOBAL = HEADER + (
    "https://NEWS.example.org,NEWS,News Media,2014-04-15,citizenlab,the same site as ru.csv's\n"
    "https://search.example.net/,SRCH,Search Engines,2014-04-15,citizenlab,\n"
)


def config(tmp_path: Path, sources: list[dict[str, Any]], **extra: Any) -> Any:
    (tmp_path / "lists").mkdir(exist_ok=True)
    (tmp_path / "lists" / "ru.csv").write_text(RU, encoding="utf-8")
    (tmp_path / "lists" / "global.csv").write_text(GLOBAL, encoding="utf-8")
    return parse_config({"targets_from": sources, **extra}, "test.yaml", tmp_path)


def targets(tmp_path: Path, sources: list[dict[str, Any]], **extra: Any) -> dict[str, str]:
    return {t.url: t.group for t in config(tmp_path, sources, **extra).targets}


def test_every_row_becomes_a_target_with_its_category_as_group(tmp_path: Path) -> None:
    assert targets(tmp_path, [{"test_list": "lists/ru.csv"}]) == {
        "https://news.example.org/": "NEWS",
        "https://rights.example.org/reports/2024?lang=ru": "HUMR",
        "http://lgbt.example.org/": "LGBT",
        "https://vpn.example.org/": "ANON",
    }


def test_names_come_from_the_url_alone() -> None:
    assert target_name("https://news.example.org/") == "news.example.org"
    assert target_name("https://News.Example.org") == "news.example.org"
    other = target_name("https://rights.example.org/reports/2024?lang=ru")
    assert other.startswith("rights.example.org-")
    assert other != target_name("https://rights.example.org/reports/2024?lang=en")
    assert target_name("http://lgbt.example.org/") != target_name("https://lgbt.example.org/")
    assert target_name("https://новости.example/") == "xn--b1amnebsh.example"


def test_category_filters_hold(tmp_path: Path) -> None:
    only = targets(tmp_path, [{"test_list": "lists/ru.csv", "categories": ["news", "HUMR"]}])
    assert set(only.values()) == {"NEWS", "HUMR"}
    safe = [{"test_list": "lists/ru.csv", "exclude_categories": ["LGBT", "ANON"]}]
    assert set(targets(tmp_path, safe).values()) == {"NEWS", "HUMR"}
    both = [
        {
            "test_list": "lists/ru.csv",
            "categories": ["NEWS", "LGBT"],
            "exclude_categories": ["LGBT"],
        }
    ]
    assert set(targets(tmp_path, both).values()) == {"NEWS"}


def test_limit_keeps_the_first_rows_the_filters_keep(tmp_path: Path) -> None:
    limited = [{"test_list": "lists/ru.csv", "exclude_categories": ["NEWS"], "limit": 2}]
    assert list(targets(tmp_path, limited)) == [
        "https://rights.example.org/reports/2024?lang=ru",
        "http://lgbt.example.org/",
    ]


def test_a_url_in_several_lists_is_probed_once(tmp_path: Path) -> None:
    sources = [{"test_list": "lists/ru.csv"}, {"test_list": "lists/global.csv"}]
    loaded = config(tmp_path, sources).targets
    assert [t.name for t in loaded].count("news.example.org") == 1
    assert len(loaded) == 5


def test_the_configs_own_target_wins_over_a_listed_one(tmp_path: Path) -> None:
    own = [{"name": "bbc", "url": "https://news.example.org/", "group": "canary"}]
    loaded = config(tmp_path, [{"test_list": "lists/global.csv"}], targets=own).targets
    assert [(t.name, t.group) for t in loaded] == [
        ("bbc", "canary"),
        ("search.example.net", "SRCH"),
    ]


def test_an_unknown_category_is_an_error_not_a_filter_that_lets_all_through(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"targets_from\[0\]\.exclude_categories.*unknown category LGTB"
    ):
        config(tmp_path, [{"test_list": "lists/ru.csv", "exclude_categories": ["LGTB"]}])


def test_a_missing_list_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"targets_from\[0\]\.test_list.*does not exist"):
        config(tmp_path, [{"test_list": "lists/xx.csv"}])


def test_bad_rows_are_named_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        HEADER
        + "https://ok.example.org/,NEWS,News Media,2014-04-15,,\n"
        + "ftp://files.example.org/,FILE,File-sharing,2014-04-15,,\n"
        + '"https://multi.example.org/\nline",NEWS,News Media,2014-04-15,,\n'
        + "https://nocat.example.org/,,,2014-04-15,,\n"
        + "https://short.example.org/,NEWS\n"
        + "https://port.example.org:99999/,NEWS,News Media,2014-04-15,,\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        parse_config({"targets_from": [{"test_list": str(bad)}]}, "test.yaml")
    message = str(err.value)
    assert f"{bad}:3: url 'ftp://files.example.org/' is not an http(s)://host/... URL" in message
    assert f"{bad}:4: url 'https://multi.example.org/\\nline' holds whitespace" in message
    assert f"{bad}:6: category_code '' is not a code such as NEWS" in message
    assert f"{bad}:7: wrong number of fields" in message
    assert f"{bad}:8: url 'https://port.example.org:99999/' has a bad port" in message
    assert f"{bad}:2" not in message


def test_a_file_that_is_no_test_list_is_named(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("name,pattern\nx,y\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"other\.csv:1: no column url, category_code"):
        parse_config({"targets_from": [{"test_list": str(other)}]}, "test.yaml")


def test_a_list_drives_a_check_on_loopback(session_lab: LoopbackLab, tmp_path: Path) -> None:
    """A Citizen Lab-format list naming the lab's servers: the chosen categories are probed,
    each target's group is its category in the JSON, and the excluded one is never probed."""
    lab = session_lab
    rows = [
        (lab.url("https", "valid.test"), "NEWS"),
        (lab.url("blockpage", "blocked.test"), "HUMR"),
        (lab.url("https", "valid.test") + "lgbt", "LGBT"),
    ]
    listed = tmp_path / "xx.csv"
    listed.write_text(HEADER + "".join(f"{u},{c},,2024-01-01,,\n" for u, c in rows), "utf-8")
    data = lab.config([])
    data["targets_from"] = [{"test_list": str(listed), "exclude_categories": ["LGBT"]}]
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    _, output = check_json(path)
    reported = {t["name"]: t for t in output["targets"]}
    assert {t["group"] for t in reported.values()} == {"NEWS", "HUMR"}
    news = reported[target_name(rows[0][0])]
    assert (news["group"], news["verdict"]) == ("NEWS", "reachable")
    rights = reported[target_name(rows[1][0])]
    assert (rights["group"], rights["verdict"]) == ("HUMR", "http_blocking")
