"""`python -m agent.healthcheck CONFIG`: exit 0 when the agent's /healthz says ok, else 1.

The container's HEALTHCHECK (the slim base has no curl). It reads the same config file as the
agent, so it asks the address the agent listens on: a wildcard listen address is asked on the
loopback of the same family. An agent without `agent.listen` (push only) serves nothing to ask
and counts as healthy. A config that does not load exits 2, as `reachprobe validate` does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from collections.abc import Sequence

import aiohttp

from agent.config import ConfigError, load_config

TIMEOUT_SECONDS = 5.0


def health_url(listen: tuple[str, int]) -> str:
    """The /healthz URL for an agent listening on `listen`, wildcards asked on loopback."""
    host, port = listen
    ip = ipaddress.ip_address(host)
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{literal}:{port}/healthz"


async def probe(url: str, timeout: float = TIMEOUT_SECONDS) -> tuple[bool, str]:
    """GET `url`; (True, body) on HTTP 200, else (False, why)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as response,
        ):
            body = (await response.content.read(4096)).decode("utf-8", "replace")
            return response.status == 200, f"HTTP {response.status}: {body.strip()}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; `argv` is the config path (one argument)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m agent.healthcheck CONFIG", file=sys.stderr)
        return 2
    try:
        config = load_config(args[0])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    listen = config.agent.listen_address
    if listen is None:
        print("no agent.listen: nothing to ask, healthy")
        return 0
    ok, why = asyncio.run(probe(health_url(listen)))
    print(why)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
