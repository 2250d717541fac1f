"""map_bounded: every item once, in order, never more than `limit` at a time."""

from __future__ import annotations

import asyncio
import random

import pytest

from measure.pool import map_bounded


async def test_results_come_back_in_order_and_never_more_than_limit_run() -> None:
    running, peak = 0, 0

    async def work(item: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(random.uniform(0, 0.005))  # finish out of order
        running -= 1
        return item * 2

    items = list(range(200))
    assert await map_bounded(work, items, 7) == [i * 2 for i in items]
    assert peak == 7


async def test_no_items_and_a_limit_above_the_items() -> None:
    async def work(item: int) -> int:
        return item

    assert await map_bounded(work, [], 4) == []
    assert await map_bounded(work, [1, 2], 100) == [1, 2]


async def test_an_exception_propagates() -> None:
    async def work(item: int) -> int:
        if item == 3:
            raise ValueError("three")
        return item

    with pytest.raises(ValueError, match="three"):
        await map_bounded(work, list(range(10)), 2)


async def test_tasks_alive_stay_bounded() -> None:
    gate = asyncio.Event()

    async def work(item: int) -> int:
        await gate.wait()
        return item

    running = asyncio.ensure_future(map_bounded(work, list(range(5000)), 16))
    await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) <= 16 + 2  # the workers, the map, the test
    gate.set()
    assert len(await running) == 5000
