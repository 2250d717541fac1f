"""An event loop in a background thread, so that synchronous code (pytest fixtures, tests
that run the agent as a subprocess) can host the asyncio servers for a whole session."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """A running event loop on a daemon thread; `run()` executes a coroutine on it.

    `errors` collects what reaches the loop's exception handler (a server callback that
    raised), so that tests can assert that the servers stayed healthy.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(self._record)
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="test-servers", daemon=True
        )
        self._thread.start()

    def _record(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.errors.append(context)
        loop.default_exception_handler(context)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run `coro` on the background loop and return its result (blocking)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and join its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()
