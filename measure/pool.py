"""A bounded map: many items through a few tasks, so a cycle of 10,000 targets does not
create 10,000 tasks (and their coroutine frames) up front."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def map_bounded(fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R]:
    """`fn` over `items`, started in order, at most `limit` awaited at once; the results come
    back in the items' order. An exception from `fn` propagates as from `asyncio.gather`."""
    slots: dict[int, R] = {}
    pending = iter(enumerate(items))

    async def worker() -> None:
        for index, item in pending:
            slots[index] = await fn(item)

    await asyncio.gather(*(worker() for _ in range(min(limit, len(items)))))
    return [slots[i] for i in range(len(items))]
