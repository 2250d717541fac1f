"""The demo's status page in a real browser: Debian's headless Chromium, driven over the
DevTools protocol (aiohttp websocket, loopback only).

The page must load without console errors, show the demo's blocked targets as blocked, keep
readable contrast, and fit the screen at 400 px (stacked cards) and 1280 px (a table) with
nothing running off sideways; the test keeps a screenshot of each width in `.artifacts/`.
Chromium is kept off the network: no background services, and every host name but the
loopback address fails to resolve.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.test_demo import _first_line, _page_with_rows
from tests.test_status_page import parse

REPO = Path(__file__).resolve().parent.parent
ARTIFACT = REPO / ".artifacts" / "status-page.png"
# A phone (the page works from 320 px up) and a desktop, each with its screenshot.
WIDTHS = {400: REPO / ".artifacts" / "status-page-400.png", 1280: ARTIFACT}
CHROMIUM = shutil.which("chromium")
DEADLINE = 30.0
BLOCKED = {
    "messenger": "blocked (TLS)",
    "poisoned": "blocked (DNS)",
    "injected": "blocked (DNS)",
    "blocked-page": "blocked (HTTP)",
    "ip-blocked": "blocked (IP)",
}
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (scripts/apt-packages.txt)"
)


class DevTools:
    """The few DevTools protocol calls the test needs, on one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and return its result; events that arrive meanwhile are kept."""
        ident = next(self.ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == ident:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    async def wait_event(self, method: str) -> dict[str, Any]:
        """The next event named `method` (earlier ones were kept)."""
        while True:
            message = await self.ws.receive_json()
            if "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    return message

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser-logged errors seen so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:300])
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(json.dumps(params["args"])[:300])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found


@pytest.fixture
async def demo_url() -> AsyncIterator[str]:
    """The URL of a running `reachprobe demo`'s status page, once its first cycle shows."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "demo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(_first_line(proc.stdout, "reachprobe demo: open"), DEADLINE)
        url = line.split()[3]
        await asyncio.wait_for(_page_with_rows(url), DEADLINE)
        yield url
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), DEADLINE)


@pytest.fixture
async def devtools() -> AsyncIterator[DevTools]:
    """A headless Chromium's blank page over the DevTools protocol."""
    assert CHROMIUM is not None
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
        "--window-size=1280,900", "about:blank",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(_first_line(proc.stderr, "DevTools listening on"), DEADLINE)
        port = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
        assert port, line
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as http:
            async with http.get(f"http://127.0.0.1:{port[1]}/json/list") as response:
                pages = [t for t in await response.json() if t["type"] == "page"]
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                tools = DevTools(ws)
                for domain in ("Runtime", "Log", "Page"):
                    await tools.call(f"{domain}.enable")
                yield tools
    finally:
        proc.kill()
        await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _rgb(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in re.findall(r"[\d.]+", text)[:3])


def contrast(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two CSS `rgb(...)` colours."""

    def luminance(colour: str) -> float:
        channels = [c / 255 for c in _rgb(colour)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


OVERFLOW_JS = """JSON.stringify({
  scroll: document.documentElement.scrollWidth, inner: innerWidth,
  clipped: [...document.querySelectorAll('tbody th, td, dd, .summary')].filter(e =>
    e.getBoundingClientRect().right > innerWidth + 0.5 || e.scrollWidth > e.clientWidth + 1
  ).map(e => e.textContent.trim().slice(0, 60)),
  labels: [...document.querySelector('tbody tr').querySelectorAll('td')].map(e =>
    getComputedStyle(e, '::before').content.replace(/^"|"$/g, '')),
})"""

COLOURS_JS = """JSON.stringify([...document.querySelectorAll('.verdict, .strip span')].map(e => {
  const s = getComputedStyle(e); return [s.color, s.backgroundColor]; }))"""


async def test_chromium_shows_the_demo_page_without_errors(
    demo_url: str, devtools: DevTools
) -> None:
    await asyncio.wait_for(devtools.call("Page.navigate", url=demo_url), DEADLINE)
    await asyncio.wait_for(devtools.wait_event("Page.loadEventFired"), DEADLINE)

    async def evaluate(expression: str) -> Any:
        result = await devtools.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"]["value"]

    dom = await evaluate("document.documentElement.outerHTML")
    rows = parse(dom).rows
    for name, words in BLOCKED.items():
        assert rows[name][0] == f"✗ {words}", name
    assert rows["news"][0] == "✓ reachable"
    for foreground, background in json.loads(await evaluate(COLOURS_JS)):
        assert contrast(foreground, background) >= 4.5, (foreground, background)

    for width, artifact in WIDTHS.items():
        await devtools.call(
            "Emulation.setDeviceMetricsOverride",
            width=width, height=900, deviceScaleFactor=1, mobile=width < 600,
        )  # fmt: skip
        layout = json.loads(await evaluate(OVERFLOW_JS))
        # Nothing runs off sideways: no page-wide scrolling, no cell cut at the right edge
        # or wider than itself (every column's content is on screen).
        assert layout["scroll"] <= layout["inner"], (width, layout)
        assert layout["clipped"] == [], (width, layout)
        if width < 600:
            # Stacked: each row is a card, its cells labelled with their column.
            assert layout["labels"] == ["Verdict", "What happened", "Timings",
                                        "History (oldest first)"], layout  # fmt: skip
        save(artifact, await screenshot(devtools))
    await asyncio.sleep(0.5)  # late console messages
    assert devtools.console_errors() == []


async def screenshot(devtools: DevTools) -> bytes:
    """The whole page, as laid out now, as PNG."""
    size = (await devtools.call("Page.getLayoutMetrics"))["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = await devtools.call(
        "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
    )
    return base64.b64decode(shot["data"])


def save(artifact: Path, png: bytes) -> None:
    assert len(png) > 10_000
    artifact.parent.mkdir(exist_ok=True)
    artifact.write_bytes(png)
