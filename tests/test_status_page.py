"""The status page sink against a real cycle of the demo world, and served at `/`.

The page is parsed as HTML (the standard library's parser), not grepped, for what a person
reads: each target's verdict in words, the failing code and its explanation.
"""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from agent.scheduler import Scheduler
from agent.server import make_app
from agent.sinks.prometheus import PrometheusSink
from agent.sinks.status import StatusSink
from measure.plan import TargetPlan
from measure.report import CycleReport, TargetReport
from measure.verdict import Verdict
from probes.results import StepResult
from probes.taxonomy import Code, Step
from tests.demo_world import cycle_of, demo_agent, publish_demo_cycle

HOSTILE = "<script>alert('x')</script><img src=http://evil.test/x>"


class Rows(HTMLParser):
    """The target table's rows as {target name: text of each cell}, and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._host_div = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._row = []
        elif tag in ("th", "td") and self._row is not None:
            self._cell = []
        elif tag == "div" and dict(attrs).get("class") in ("host", "group"):
            self._host_div = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "div":
            self._host_div = False
        elif tag == "tr" and self._row:
            self.rows[self._row[0]] = self._row[1:]
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not self._host_div:
            self._cell.append(data)


def parse(page: str) -> Rows:
    rows = Rows()
    rows.feed(page)
    return rows


async def test_the_page_shows_each_demo_target_with_its_verdict_and_why(tmp_path: Path) -> None:
    sink = StatusSink()
    await publish_demo_cycle(sink, tmp_path)
    page = parse(sink.render())
    verdicts = {name: cells[0] for name, cells in page.rows.items() if name != "Target"}
    assert verdicts == {
        "news": "✓ reachable",
        "messenger": "✗ blocked (TLS)",
        "poisoned": "✗ blocked (DNS)",
        "injected": "✗ blocked (DNS)",
        "blocked-page": "✗ blocked (HTTP)",
        "ip-blocked": "✗ blocked (IP)",
        "video": "✓ reachable",
        "canary": "✓ reachable",
    }
    why = page.rows["messenger"][1]
    assert "tls_reset" in why
    assert "reset right after the TLS greeting that named messenger.test" in why
    assert "SNI-based" in why
    assert "dns_bogon" in page.rows["poisoned"][1]


async def test_the_page_is_self_contained_and_refreshes_itself(tmp_path: Path) -> None:
    sink = StatusSink()
    await publish_demo_cycle(sink, tmp_path)
    tags = parse(sink.render()).tags
    assert ("meta", {"http-equiv": "refresh", "content": "15"}) in tags  # half the 30s interval
    assert not [t for t, _ in tags if t in ("script", "img", "iframe", "object")]
    links = [a.get("href") or a.get("src") or "" for _, a in tags]
    assert not [link for link in links if "//" in link], "an external resource"


def _hostile_report() -> TargetReport:
    target = TargetPlan(name="hostile", group="", scheme="http", host=HOSTILE, port=80)
    http = StepResult(Step.HTTP, Code.HTTP_BLOCKPAGE, "192.0.2.1:80", 0.01, HOSTILE)
    return TargetReport(target, Verdict.HTTP_BLOCKING, chains=((http,),))


def test_the_page_shows_each_targets_category() -> None:
    """A test list's category (the target's group) is on the page: what kind of site it is."""
    target = TargetPlan(name="news.example.org", group="NEWS", scheme="https", host="h", port=443)
    plain = TargetPlan(name="plain", group="", scheme="https", host="h", port=443)
    sink = StatusSink()
    reports = tuple(TargetReport(t, Verdict.REACHABLE) for t in (target, plain))
    sink.publish(CycleReport(1, 0.0, 0.1, reports))
    page = sink.render()
    assert "<div class=group>NEWS</div>" in page
    assert page.count("<div class=group>") == 1


def test_text_from_the_network_is_escaped() -> None:
    sink = StatusSink()
    sink.publish(CycleReport(1, 0.0, 0.1, (_hostile_report(),)))
    page = sink.render()
    assert "<script" not in page
    assert "<img" not in page
    assert "&lt;script&gt;" in page
    tags = parse(page).tags
    assert not [t for t, _ in tags if t in ("script", "img")]


def test_history_is_bounded_per_target() -> None:
    sink = StatusSink(history=3)
    report = _hostile_report()
    for number in range(1, 6):
        sink.publish(CycleReport(number, float(number), 0.1, (report,)))
    assert [m.at for m in sink.marks["hostile"]] == [3.0, 4.0, 5.0]
    strip = parse(sink.render()).rows["hostile"][-1]
    assert strip == "✗✗✗0/3 reachable"


async def test_a_target_removed_from_the_config_leaves_the_page(tmp_path: Path) -> None:
    sink = StatusSink()
    config, plan, _ = await publish_demo_cycle(sink, tmp_path)
    fewer = dataclasses.replace(plan, targets=plan.targets[:2])
    sink.configure(config, fewer)
    assert set(parse(sink.render()).rows) == {"Target", "news", "messenger"}


async def test_the_agent_serves_the_page_at_root(tmp_path: Path) -> None:
    async with demo_agent(tmp_path) as (config, prober):
        cycle = await cycle_of(prober)
    metrics, status = PrometheusSink(), StatusSink()
    scheduler = Scheduler(config, [metrics, status], None)
    try:
        for sink in (metrics, status):
            sink.configure(config, scheduler.plan)
            sink.publish(cycle)
        app = make_app(metrics.registry, scheduler, status.render)
        async with TestClient(TestServer(app)) as client:
            page = await client.get("/")
            assert page.status == 200
            assert page.content_type == "text/html"
            assert "blocked (TLS)" in parse(await page.text()).rows["messenger"][0]
            scrape = await client.get("/metrics")
            assert 'reachprobe_target_up{target="news"} 1.0' in await scrape.text()
    finally:
        await scheduler.prober.aclose()
