"""OONI's blocking fingerprints as the agent reads them: recall on every blockpage fingerprint,
no flag on OONI's false positives nor on ordinary pages, OONI's matching rules, and the
refresh script.

The CSVs in tests/fixtures/ooni/ are a sample of our own in OONI's format (ooni/blocking-
fingerprints states no licence, so the repository holds no copy of it). With
REACHPROBE_OONI_FINGERPRINTS set to a checkout of that repository, the same tests also run on
OONI's real files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.fingerprint_db import (
    FingerprintFileError,
    load_dns,
    load_http,
    read_ooni_dns,
    read_ooni_http,
)
from agent.planner import make_plan
from probes.blockpages import BlockpageMatcher, Fingerprint

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "fixtures" / "ooni"
REAL = os.environ.get("REACHPROBE_OONI_FINGERPRINTS")
FOLDERS = [pytest.param(SAMPLE, id="sample")] + (
    [pytest.param(Path(REAL), id="ooni")] if REAL else []
)


def regexp_sample(pattern: str) -> str:
    """A text that `pattern` matches, for the simple patterns fingerprints use (literals,
    escapes, `.`, `.*`, `\\d`, one-class repeats); checked by the caller."""
    out = re.sub(r"\.\*", "", pattern)
    out = re.sub(r"\[A-Z\]\[a-z\]\+", "Interior", out)
    out = out.replace(r"\d+", "7").replace(r"\d", "0")
    out = re.sub(r"(?<!\\)\.", "x", out)
    return re.sub(r"\\(.)", r"\1", out)


def page_for(fp: Fingerprint) -> tuple[str, dict[str, str], str]:
    """A response carrying `fp`'s pattern where `fp` looks, as a blockpage would."""
    text = regexp_sample(fp.pattern) if fp.pattern_type == "regexp" else fp.pattern
    assert fp.matches(text), f"{fp.name}: the sample {text!r} does not match"
    if fp.location == "body":
        body = {"full": text, "prefix": text + "\n</html>"}.get(
            fp.pattern_type, f"<html><body><p>{text}</p></body></html>"
        )
        return "HTTP/1.1 200 OK", {"content-type": "text/html"}, body
    header = fp.location.removeprefix("header:")
    value = {"full": text, "prefix": text + "/?u=x"}.get(fp.pattern_type, f"http://x/{text}/")
    return "HTTP/1.1 302 Found", {header: value}, ""


def bare_page(fp: Fingerprint) -> tuple[str, dict[str, str], str]:
    """A response that is only `fp`'s text: an ordinary page exactly as OONI describes it."""
    text = regexp_sample(fp.pattern) if fp.pattern_type == "regexp" else fp.pattern
    assert fp.matches(text), f"{fp.name}: the sample {text!r} does not match"
    if fp.location == "body":
        return "HTTP/1.1 200 OK", {}, text
    return "HTTP/1.1 302 Found", {fp.location.removeprefix("header:"): text}, ""


# Twenty ordinary pages: what sites, CDNs and servers answer when nothing blocks them, with
# words that sit close to blockpage words (in another case, or in another sense).
ORDINARY = [
    ("HTTP/1.1 200 OK", {"server": "nginx"}, "<html><head><title>News</title></head></html>"),
    ("HTTP/1.1 200 OK", {}, "<h1>Choosing a web filter for your school</h1>"),
    ("HTTP/1.1 403 Forbidden", {}, "<html><body>access denied: sign in first</body></html>"),
    ("HTTP/1.1 200 OK", {}, "<p>Our ACCESS DENIED t-shirt is back in stock</p>"),
    ("HTTP/1.1 301 Moved", {"location": "https://www.example.org/"}, ""),
    ("HTTP/1.1 302 Found", {"location": "https://blocked.example.org/login"}, ""),
    ("HTTP/1.1 200 OK", {"server": "Apache/2.4.57 (Debian)"}, "<p>It works!</p>"),
    ("HTTP/1.1 200 OK", {"via": "1.1 varnish"}, "<!doctype html><title>Shop</title>"),
    ("HTTP/1.1 200 OK", {}, "<html><body><p>Доступ к ресурсу открыт</p></body></html>"),  # noqa: RUF001
    ("HTTP/1.1 200 OK", {}, "<h1>The Ministry of Culture announces a festival</h1>"),
    ("HTTP/1.1 503 Service Unavailable", {}, "<h1>Service Unavailable</h1>"),
    ("HTTP/1.1 404 Not Found", {}, "<html><title>404 Not Found</title></html>"),
    ("HTTP/1.1 200 OK", {"content-type": "application/json"}, '{"status": "blocked": false}'),
    ("HTTP/1.1 200 OK", {}, "<html><body><p></p></body></html>"),
    ("HTTP/1.1 200 OK", {"server": "examplefilter/2"}, "<p>lowercase product name</p>"),
    ("HTTP/1.1 200 OK", {}, "<title>Access restricted by the example registry</title>"),
    ("HTTP/1.1 200 OK", {}, "<html>blocked</html>"),
    ("HTTP/1.1 200 OK", {}, "<h1>blocked by a web gateway</h1>"),
    ("HTTP/1.1 302 Found", {"location": "http://warning.example-isp.aa/more"}, ""),
    ("HTTP/1.1 200 OK", {"x-app-url": "http://filter.example-isp.bb/allow"}, "<p>ok</p>"),
]


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_blockpage_fingerprint_is_recalled(folder: Path) -> None:
    database = read_ooni_http(folder / "fingerprints_http.csv")
    matcher = BlockpageMatcher(database)
    blockpages = [fp for fp in database if not fp.false_positive]
    missed = [fp.name for fp in blockpages if matcher.match(*page_for(fp)) is None]
    assert blockpages
    assert not missed, f"{len(missed)} of {len(blockpages)} missed: {missed}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_false_positive_page_is_flagged(folder: Path) -> None:
    database = read_ooni_http(folder / "fingerprints_http.csv")
    matcher = BlockpageMatcher(database)
    fps = [fp for fp in database if fp.false_positive]
    flagged = {fp.name: m.name for fp in fps if (m := matcher.match(*bare_page(fp)))}
    assert fps
    assert not flagged, f"{len(flagged)} of {len(fps)} flagged: {flagged}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_ordinary_page_is_flagged(folder: Path) -> None:
    matcher = BlockpageMatcher(read_ooni_http(folder / "fingerprints_http.csv"))
    flagged = [(page, m.name) for page in ORDINARY if (m := matcher.match(*page))]
    assert len(ORDINARY) == 20
    assert not flagged, flagged


def test_the_sample_keeps_names_countries_sources_and_rules() -> None:
    database = {fp.name: fp for fp in read_ooni_http(SAMPLE / "fingerprints_http.csv")}
    assert database["sample.aa_1"] == Fingerprint(
        "sample.aa_1", "/rkn-block/", "header:location", "contains", "AA,BB", "sample"
    )
    assert database["sample.bb_2"].location == "header:x-app-url"
    assert database["sample.aa_4"].pattern == 'Доступ к ресурсу ограничен, "реестр" №1'  # noqa: RUF001
    assert database["sample.fp_2"].false_positive


SAMPLE_MATCHER = BlockpageMatcher(read_ooni_http(SAMPLE / "fingerprints_http.csv"))


@pytest.mark.parametrize(
    ("response", "named"),
    [
        # case-sensitive, as OONI matches
        (("HTTP/1.1 200 OK", {}, "<b>Web Filter</b>"), "sample.bb_4"),
        (("HTTP/1.1 200 OK", {}, "<b>WEB FILTER</b>"), None),
        # prefix and full read the whole header value, from its start
        (("HTTP/1.1 302 Found", {"location": "http://blocked.example-isp.aa/"}, ""), "sample.aa_0"),
        (("HTTP/1.1 302 Found", {"location": "https://a/?http://blocked.example-isp.aa"}, ""),
         None),
        (("HTTP/1.1 302 Found", {"location": "http://warning.example-isp.aa/"}, ""), "sample.aa_2"),
        (("HTTP/1.1 302 Found", {"location": "http://warning.example-isp.aa/x"}, ""), None),
        # a body `full` pattern is the whole body
        (("HTTP/1.1 200 OK", {}, "<html>BLOCKED</html>"), "sample.cc_0"),
        (("HTTP/1.1 200 OK", {}, "<html>BLOCKED</html>\n"), None),
        # a header fingerprint looks at that header only, never at the body
        (("HTTP/1.1 200 OK", {}, "Server: ExampleFilter/1.0"), None),
        # a false positive overrides only the blockpages whose text it holds
        (("HTTP/1.1 200 OK", {}, "<html><body></body></html>"), "sample.cc_1"),
        (("HTTP/1.1 200 OK", {}, "<html><body></body></html><!-- default vhost -->"), None),
        (
            ("HTTP/1.1 200 OK", {}, "Service Unavailable <title>Access restricted by the "
             "Example Registry</title>"),
            "sample.aa_3",
        ),
    ],
)  # fmt: skip
def test_oonis_matching_rules(response: tuple[str, dict[str, str], str], named: str) -> None:
    found = SAMPLE_MATCHER.match(*response)
    assert (found.name if found else None) == named


def test_the_first_fingerprint_in_the_list_names_the_page() -> None:
    first = Fingerprint("first", "Blocked", "body", "contains")
    second = Fingerprint("second", "page Blocked", "body", "contains")
    found = BlockpageMatcher([second, first]).match("HTTP/1.1 200 OK", {}, "page Blocked")
    assert found is not None
    assert found.name == "second"


def test_the_dns_sample_leaves_out_false_positives_and_vague_bogons() -> None:
    answers = {fp.name: fp.answer for fp in read_ooni_dns(SAMPLE / "fingerprints_dns.csv")}
    assert answers == {
        "sample.dns_aa_0": "198.51.100.20",
        "sample.dns_aa_1": "2001:db8::20",
        "sample.dns_bb_0": "blockpage.example-isp.bb",
        "sample.dns_cc_0": "10.10.34.34",
    }


def test_refresh_writes_a_database_the_agent_loads(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "refresh-fingerprints"),
         "--http", str(SAMPLE / "fingerprints_http.csv"),
         "--dns", str(SAMPLE / "fingerprints_dns.csv"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "15 HTTP blockpage fingerprints, 5 false positives, 4 DNS" in proc.stdout
    http = load_http(tmp_path / "fingerprints" / "http.json")
    assert http == read_ooni_http(SAMPLE / "fingerprints_http.csv")
    assert load_dns(tmp_path / "fingerprints" / "dns.json") == read_ooni_dns(
        SAMPLE / "fingerprints_dns.csv"
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("name,pattern\nx,y\n", "1: no column location_found, pattern_type, scope"),
        (
            "name,scope,location_found,pattern_type,pattern\nx,isp,body,contains,a\n"
            "x,isp,body,contains,b\n",
            "3: fingerprint 'x' listed twice",
        ),
        ("name,scope,location_found,pattern_type,pattern\nx,isp,dns,full,a\n", "2: location"),
        ("name,scope,location_found,pattern_type,pattern\nx,isp,body,glob,a\n", "2: x: pattern"),
        ("name,scope,location_found,pattern_type,pattern\nx,isp,body,regexp,(\n", "2: x: not a"),
        (
            "name,scope,location_found,pattern_type,pattern\nx,isp,body,contains,\n",
            "2: x: an empty",
        ),
        ("name,scope,location_found,pattern_type,pattern\nx,isp,body\n", "2: wrong number"),
    ],
)
def test_bad_rows_are_named_with_file_and_line(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "fingerprints_http.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FingerprintFileError, match=re.escape(f"{path}:{error}")):
        read_ooni_http(path)


def test_refresh_reports_a_bad_file_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name,scope,location_found,pattern_type,pattern\nx,isp,body,glob,a\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "refresh-fingerprints"), "--http", str(bad),
         "--dns", str(SAMPLE / "fingerprints_dns.csv"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"refresh-fingerprints: {bad}:2: x: pattern_type")
    assert not (tmp_path / "out").exists()


def test_a_config_can_point_at_a_local_copy_of_oonis_repository(tmp_path: Path) -> None:
    config = parse_config({"fingerprints": {"ooni": "ooni"}}, "test.yaml", SAMPLE.parent)
    plan = make_plan(config)
    names = [fp.name for fp in plan.fingerprints]
    assert names[:20] == [fp.name for fp in read_ooni_http(SAMPLE / "fingerprints_http.csv")]
    assert "ru-federal-block" in names  # the hand-written entries OONI's sample lacks stay
    assert {fp.name for fp in plan.dns_fingerprints} >= {"sample.dns_aa_0", "sample.dns_cc_0"}


def test_a_bad_row_in_the_configured_copy_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "fingerprints_http.csv").write_text(
        "name,scope,location_found,pattern_type,pattern\nx,isp,body,regexp,(\n", encoding="utf-8"
    )
    (tmp_path / "fingerprints_dns.csv").write_text(
        (SAMPLE / "fingerprints_dns.csv").read_text(encoding="utf-8"), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"fingerprints\.ooni.*fingerprints_http\.csv:2: x: not"):
        parse_config({"fingerprints": {"ooni": str(tmp_path)}}, "test.yaml")
