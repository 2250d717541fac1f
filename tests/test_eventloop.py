"""agent.eventloop: uvloop when installed and not ruled out, asyncio's loop otherwise; the
same coroutine gives the same answer on either."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest

from agent import eventloop

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_name() -> str:
    return eventloop.name(asyncio.get_running_loop())


def test_env_rules_uvloop_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert eventloop.loop_factory() is None
    assert eventloop.run(_loop_name()) == "asyncio"


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop (the fast extra) is not installed")
def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.run(_loop_name()) == "uvloop"


def test_without_uvloop_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    assert eventloop.loop_factory() is None
    assert eventloop.run(_loop_name()) == "asyncio"


def test_run_returns_the_coroutine_result(monkeypatch: pytest.MonkeyPatch) -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert eventloop.run(answer()) == 42
