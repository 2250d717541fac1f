"""The event loop the agent runs on: uvloop's when it is installed (`pip install
'reachprobe[fast]'`), else asyncio's own. Both run the same code: the steps use only the
loop's socket calls (`sock_connect`, `sock_recv`, `sock_sendall`), datagram endpoints and
timers, which uvloop implements in C with less Python-level work per call.

`REACHPROBE_EVENT_LOOP=asyncio` keeps asyncio's loop although uvloop is installed (to compare
the two, or to rule uvloop out); `uvloop` (or unset) is the default. Any other value is an
error, never silently the default: a typo would otherwise measure the wrong loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
ENV = "REACHPROBE_EVENT_LOOP"
CHOICES = ("asyncio", "uvloop")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when it is importable and not ruled out; None means asyncio's.

    Raises ValueError, ready to print, when the environment names no known loop.
    """
    written = os.environ.get(ENV, "")
    choice = written.strip().lower()
    if choice not in ("", *CHOICES):
        raise ValueError(f"{ENV}={written!r} is not an event loop: use asyncio or uvloop")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `loop_factory` chooses."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def name(loop: asyncio.AbstractEventLoop) -> str:
    """`uvloop` or `asyncio`: which loop `loop` is, for the log."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
