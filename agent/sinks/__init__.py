"""Sinks: where finished cycles go (Prometheus metrics, the JSON document, the table; later
the status page, the measurement log and remote-write).

The scheduler (or `check`) hands each finished cycle to every sink; a sink reads the typed
fields of the reports and never imports another sink. See docs/architecture.md.
"""

from __future__ import annotations

from agent.config import Config
from measure.plan import ProbePlan
from measure.report import CycleReport


class Sink:
    """The shape every sink has; the defaults do nothing.

    The lifecycle: `start` once on the running loop, then `configure` (and again on every
    reload, with `reloaded`), `publish` for each finished cycle (to every sink in one
    synchronous pass), and `aclose` once at the end.
    """

    async def start(self) -> None:
        """Start what the sink runs in the background (a sending task), on the agent's loop."""

    def configure(self, config: Config, plan: ProbePlan) -> None:
        """Take in a (re)loaded config, before the first cycle under it is published."""

    def reloaded(self, ok: bool, at: float) -> None:
        """Hear of a config reload at unix time `at`: applied (`ok`), or refused and the old
        config kept."""

    def publish(self, cycle: CycleReport) -> None:
        """Receive a finished cycle. Must not block: a sink that does I/O hands it to a
        task of its own."""

    async def aclose(self) -> None:
        """Flush and release what the sink holds, within a bounded time."""
