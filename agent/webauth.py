"""Basic auth for the metrics server: bcrypt checks off the event loop, cached, and the aiohttp
middleware that asks for them. The users and hashes come from the web config
(agent/config/web.py).

Password checks run bcrypt in a worker thread (bcrypt is CPU work by design: on the event loop
one request would stall every probe) and their outcome is cached per (user, stored hash,
presented password), as the exporter toolkit does, so that a scraper does not pay one bcrypt
per scrape.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

# Compared against when the user is unknown, so that a wrong user name costs as much time as
# a wrong password and response times do not reveal which users exist (the toolkit does this).
_DUMMY_HASH = b"$2b$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
CACHE_SIZE = 100
REALM = "reachprobe"


def _bcrypt_hash(text: str) -> bytes:
    # htpasswd writes $2y$, which the Python bcrypt package reads as $2b$ (same algorithm).
    data = text.encode()
    return b"$2b$" + data[4:] if data.startswith(b"$2y$") else data


class PasswordChecker:
    """Checks basic auth pairs against bcrypt hashes, off the event loop and cached.

    The cache maps a digest of (user, stored hash, presented password) to the outcome, so a
    changed hash or password never hits a stale entry and no password is kept in memory. One
    check runs at a time: a flood of wrong passwords costs one core, never the probes' loop.
    """

    def __init__(self, users: dict[str, str], cache_size: int = CACHE_SIZE) -> None:
        self._users = {user: _bcrypt_hash(hashed) for user, hashed in users.items()}
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._cache_size = cache_size
        self._lock = asyncio.Lock()

    async def check(self, user: str, password: str) -> bool:
        """Whether `user` with `password` is allowed."""
        known = user in self._users
        stored = self._users.get(user, _DUMMY_HASH)
        key = hashlib.sha256(b"\0".join((user.encode(), stored, password.encode()))).digest()
        cached = self._cache.get(key)
        if cached is None:
            async with self._lock:
                cached = await asyncio.to_thread(_checkpw, password.encode(), stored)
            self._cache[key] = cached
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return cached and known


def _checkpw(password: bytes, stored: bytes) -> bool:
    """bcrypt's check, imported on the first login: `validate` and `check` never need it."""
    import bcrypt

    return bool(bcrypt.checkpw(password, stored))


Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def basic_auth_middleware(checker: PasswordChecker) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware answering 401 unless the request carries an allowed user."""
    # Here, not at the top: `check` and `validate` read web configs but never serve.
    from aiohttp import BasicAuth, hdrs, web

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        try:
            auth = BasicAuth.decode(header) if header else None
        except ValueError:
            auth = None
        if auth is None or not await checker.check(auth.login, auth.password):
            return web.Response(
                status=401,
                text="Unauthorized\n",
                headers={hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}"'},
            )
        return await handler(request)

    return middleware
