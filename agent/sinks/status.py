"""The status page sink: what the volunteer sees at `/` on the agent's server.

It keeps the last cycles of every target in memory (bounded: `history` cycles per target) and
renders one self-contained HTML page: no script, no external font, style sheet or image, so
it works offline and leaks nothing. Everything that came from the network (details, redirect
targets) is HTML-escaped. Verdicts are shown in words and symbols as well as colour.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from agent import __version__
from agent.config import Config
from agent.explain import (
    SYMBOLS,
    download_rate,
    explain,
    health_problems,
    rate_size,
    slow_downloads,
    step_timings,
    verdict_tone,
    verdict_words,
)
from agent.sinks import Sink
from measure.plan import ProbePlan, TargetPlan
from measure.report import CycleReport, TargetReport
from measure.verdict import REACHABLE, Verdict, first_failure

DEFAULT_HISTORY = 120
# The page reloads itself about once a cycle, within what a person finds lively but cheap.
MIN_REFRESH, MAX_REFRESH = 5, 60
# The target table's columns; on a narrow screen each row becomes a card whose cells say
# which column they are (`data-label`).
COLUMNS = ("Target", "Verdict", "What happened", "Timings", "History (oldest first)")


@dataclass(frozen=True, slots=True)
class Mark:
    """One cycle's outcome for a target in the history strip."""

    at: float
    verdict: Verdict


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


class StatusSink(Sink):
    """Keeps the latest report and a bounded history per target; `render()` is the page."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        self.history = history
        self.config: Config | None = None
        self.latest: dict[str, TargetReport] = {}
        self.marks: dict[str, deque[Mark]] = {}
        self.cycle: CycleReport | None = None
        self.last_reload: tuple[bool, float] | None = None
        # The configured canaries, so that the page names them before their first report.
        self.canaries: tuple[TargetPlan, ...] = ()

    def configure(self, config: Config, plan: ProbePlan) -> None:
        self.config = config
        group = plan.vantage.canary_group
        self.canaries = tuple(t for t in plan.targets if t.group == group)
        names = {t.name for t in plan.targets}
        # A target dropped from the config leaves the page; one kept keeps its history.
        for table in (self.latest, self.marks):
            for name in [n for n in table if n not in names]:
                del table[name]

    def reloaded(self, ok: bool, at: float) -> None:
        self.last_reload = (ok, at)

    def publish(self, cycle: CycleReport) -> None:
        self.cycle = cycle
        for report in cycle.reports:
            name = report.target.name
            self.latest[name] = report
            marks = self.marks.setdefault(name, deque(maxlen=self.history))
            marks.append(Mark(cycle.started_at, report.verdict))

    def render(self) -> str:
        """The whole status page as HTML."""
        refresh = MIN_REFRESH
        if self.config is not None:
            refresh = int(min(max(self.config.agent.interval / 2, MIN_REFRESH), MAX_REFRESH))
        reports = list(self.latest.values())
        body = [
            self._header(reports),
            self._targets(reports),
            self._health(reports),
            self._identity(),
        ]
        return PAGE.format(refresh=refresh, css=CSS, body="\n".join(body))

    def _header(self, reports: Sequence[TargetReport]) -> str:
        vantage = self.config.agent.vantage if self.config else "unnamed"
        if self.cycle is None:
            state = "<p>No cycle has finished yet; this page reloads itself.</p>"
        else:
            up = sum(r.verdict == REACHABLE for r in reports)
            state = (
                f"<p class=summary><strong>{up} of {len(reports)}</strong> targets reachable "
                f"in cycle {self.cycle.number}, started {_when(self.cycle.started_at)}, "
                f"took {self.cycle.duration_seconds:.1f}\u00a0s.</p>"
            )
        return (
            f"<header><h1>reachprobe <span class=vantage>{escape(vantage)}</span></h1>{state}"
            "<p class=note>A verdict here is a local suspicion; blocking is confirmed by "
            "comparing with an uncensored vantage.</p></header>"
        )

    def _targets(self, reports: Sequence[TargetReport]) -> str:
        if not reports:
            return ""
        slow = slow_downloads(reports)
        rows = "\n".join(self._row(r, slow.get(r.target.name)) for r in reports)
        head = "".join(f"<th scope=col>{escape(c)}</th>" for c in COLUMNS)
        return (
            f"<section><h2>Targets</h2><table><thead><tr>{head}</tr></thead>"
            f"<tbody>\n{rows}\n</tbody></table></section>"
        )

    def _row(self, report: TargetReport, slow: str | None) -> str:
        target = report.target
        kind = verdict_tone(report.verdict)
        verdict = (
            f"<span class='verdict {kind}'><span aria-hidden=true>{SYMBOLS[kind]}</span> "
            f"{escape(verdict_words(report.verdict))}</span>"
        )
        failure = first_failure(report.deciding_steps)
        if report.error is not None:
            what = f"<p>{escape(report.error)}</p>"
        elif failure is None:
            noted = report.why()
            what = (
                f"<p class=slow>{escape(slow)}</p>"
                if slow
                else f"<p>{escape(noted or 'every step worked')}</p>"
            )
        else:
            where = f" at {escape(failure.address)}" if failure.address else ""
            what = (
                f"<p><strong>{escape(failure.step.value.upper())}</strong>{where}: "
                f"<code>{escape(failure.result.value)}</code></p>"
                f"<p>{escape(explain(failure.result, target.host))}</p>"
            )
            if failure.full_detail:
                what += f"<p class=detail>{escape(failure.full_detail)}</p>"
            quic = report.quic_note()
            if quic is not None:
                what += f"<p class=detail>{escape(quic)}</p>"
        timings = ", ".join(f"{step}\u00a0{ms:.0f}\u00a0ms" for step, ms in step_timings(report))
        rate = download_rate(report)
        if rate is not None:
            timings += f"<br>download {escape(rate_size(rate * 1024))}"
        # The group shows a test list's category (NEWS, HUMR, ...): what kind of site this is.
        group = f"<div class=group>{escape(target.group)}</div>" if target.group else ""
        cells = zip(COLUMNS[1:], (verdict, what, timings, self._strip(target.name)), strict=True)
        tds = "".join(
            f"<td data-label='{escape(label)}'"
            f"{' class=timings' if label == 'Timings' else ''}>{html}</td>"
            for label, html in cells
        )
        return (
            f"<tr class={kind}><th scope=row>{escape(target.name)}"
            f"<div class=host>{escape(target.host)}</div>{group}</th>{tds}</tr>"
        )

    def _strip(self, name: str) -> str:
        marks = list(self.marks.get(name, ()))
        cells = "".join(
            f"<span class={verdict_tone(m.verdict)} title='{_when(m.at)}: "
            f"{escape(verdict_words(m.verdict))}'>{SYMBOLS[verdict_tone(m.verdict)]}</span>"
            for m in marks
        )
        up = sum(m.verdict == REACHABLE for m in marks)
        return (
            f"<div class=strip role=img aria-label='reachable in {up} of {len(marks)} "
            f"recent cycles'>{cells}</div><div class=count>{up}/{len(marks)} reachable</div>"
        )

    def _health(self, reports: Sequence[TargetReport]) -> str:
        probed = {r.target.name: r for r in reports}
        items = []
        for canary in self.canaries:
            report = probed.get(canary.name)
            state = verdict_words(report.verdict) if report else "not probed yet"
            items.append(
                f"<li>{escape(canary.name)} ({escape(canary.host)}), a canary that should "
                f"always work: {escape(state)}</li>"
            )
        dns = [r.dns for r in reports if r.dns is not None]
        if dns:
            answered = sum(s.ok for s in dns)
            items.append(
                f"<li>test resolver: {answered} of {len(dns)} lookups gave a clean answer</li>"
            )
        if self.cycle is not None:
            health = self.cycle.vantage
            items += [f"<li class=problem>{escape(p)}</li>" for p in health_problems(health)]
            checks = (
                ("NXDOMAIN hijacking", health.nxdomain_hijacked),
                ("a middlebox accepting every connection", health.tcp_intercepted),
            )
            items += [
                f"<li>{escape(name)}: {'seen' if seen else 'not seen'}</li>"
                for name, seen in checks
                if seen is not None
            ]
        if not self.canaries:
            group = escape(self.config.vantage.canary_group if self.config else "canary")
            items.append(f"<li>no canary configured (a target in group <code>{group}</code>)</li>")
        return f"<section><h2>Vantage health</h2><ul>{''.join(items)}</ul></section>"

    def _identity(self) -> str:
        if self.config is None:
            return ""
        agent = self.config.agent
        res = self.config.resolvers
        rows = [
            ("vantage", agent.vantage),
            ("role", agent.role),
            ("country", agent.country or "not set"),
            ("network (ASN)", agent.asn or "not set"),
            ("version", __version__),
            ("targets", str(len(self.config.targets))),
            ("interval / timeout", f"{agent.interval:g} s / {agent.timeout:g} s"),
            ("test resolver", res.test.type),
            ("control resolver", res.control.type if res.control else "none"),
            ("measurement log", str(log.path) if (log := self.config.measurement_log) else "off"),
        ]
        if self.last_reload is not None:
            ok, at = self.last_reload
            rows.append(("last reload", f"{'applied' if ok else 'refused'} at {_when(at)}"))
        cells = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
        return f"<section><h2>This agent</h2><dl>{cells}</dl></section>"


PAGE = """<!doctype html>
<html lang=en>
<head>
<meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<meta http-equiv=refresh content="{refresh}">
<link rel=icon href="data:,">
<title>reachprobe status</title>
<style>{css}</style>
</head>
<body>
{body}
<footer><a href="/metrics">metrics</a> &middot; <a href="/healthz">health</a></footer>
</body>
</html>
"""

# Colours pass WCAG AA (4.5:1) for their text; the symbols and words carry the same meaning.
CSS = """
body{font:16px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem;
color:#1b1b1b;background:#fff}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.2rem;margin-top:1.5rem}
.vantage{font-weight:normal;color:#404040}.note{color:#404040;font-size:.9rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.45rem .5rem;border-bottom:1px solid #c8c8c8}
thead th{background:#f0f0f0}tbody th{white-space:nowrap}td p{margin:0 0 .2rem}
.host,.group,.detail,.count,.timings{color:#404040;font-size:.85rem}
.detail{overflow-wrap:anywhere}.slow{color:#6b4f00;font-weight:600}
.verdict{display:inline-block;padding:.1rem .5rem;border-radius:.3rem;font-weight:600;
white-space:nowrap;color:#fff}
.verdict.ok{background:#1a6e2e}.verdict.blocked{background:#b01c1c}
.verdict.unknown{background:#6b4f00}
.strip{display:flex;flex-wrap:wrap;gap:1px;max-width:16rem}
.strip span{width:.9rem;height:1.1rem;font-size:.7rem;line-height:1.1rem;text-align:center;
color:#fff}
.strip .ok{background:#1a6e2e}.strip .blocked{background:#b01c1c}
.strip .unknown{background:#6b4f00}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}
dd{margin:0;overflow-wrap:anywhere}
footer{margin-top:2rem;font-size:.9rem}a{color:#0645ad}
@media (max-width:44rem){
body{padding:.6rem}
thead{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%)}
table,tbody,tr,tbody th,td{display:block}
tr{border:1px solid #c8c8c8;border-radius:.4rem;margin:0 0 .8rem;padding:.4rem .6rem}
tbody th,td{border-bottom:0;padding:.2rem 0}
tbody th{white-space:normal;overflow-wrap:anywhere;font-size:1.05rem}
td{overflow-wrap:anywhere}
td::before{content:attr(data-label);display:block;font-size:.75rem;font-weight:600;
color:#404040}
dl{grid-template-columns:1fr;gap:0}dt{font-weight:600;margin-top:.3rem}
}
"""
