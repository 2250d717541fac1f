"""`reachprobe demo`: the agent against a censored network simulated on loopback.

The simulated world (`simlab.demo`) runs in the agent's own process; its certificates and the
config pointing at it live in one temporary directory that is removed on the way out, however
the demo ends. Nothing needs root, and nothing leaves loopback.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from agent.config import Config, load_config

DEMO_LISTEN = "127.0.0.1:0"
DEMO_INTERVAL = "20s"


@asynccontextmanager
async def demo_config(
    listen: str = DEMO_LISTEN, interval: str = DEMO_INTERVAL
) -> AsyncIterator[tuple[Config, Path]]:
    """Start the demo world and yield the agent config for it (and the config's path)."""
    # Here, not at the top: the simulated world brings trustme and cryptography, which the
    # other commands importing this module for its defaults never need.
    from simlab.demo import DemoWorld

    with tempfile.TemporaryDirectory(prefix="reachprobe-demo-") as tmp:
        world = await DemoWorld(Path(tmp)).start()
        try:
            path = world.write_config(Path(tmp) / "demo.yaml", listen, interval)
            yield load_config(path), path
        finally:
            await world.close()
