"""The agent's HTTP endpoints: /metrics (Prometheus text or OpenMetrics), /healthz and the
status page at /.

With a web config (agent/config/web.py) every endpoint is behind its TLS and basic auth
(agent/webauth.py).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from agent.config.web import WebConfig, ssl_context
from agent.scheduler import Scheduler
from agent.sinks.prometheus.exposition import encode
from agent.webauth import PasswordChecker, basic_auth_middleware

log = logging.getLogger("reachprobe")

INDEX = """<!doctype html><title>reachprobe</title>
<h1>reachprobe</h1><p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a></p>
"""


def make_app(
    registry: CollectorRegistry,
    scheduler: Scheduler,
    status_page: Callable[[], str] | None = None,
    web_config: WebConfig | None = None,
) -> web.Application:
    """The aiohttp application serving the agent's endpoints (behind basic auth if
    configured); `/` is `status_page()` when given (the status sink's render), else a list
    of the endpoints."""

    async def metrics_handler(request: web.Request) -> web.Response:
        body, content_type = encode(registry, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def health_handler(request: web.Request) -> web.Response:
        ok, why = scheduler.healthy()
        body = {"status": "ok" if ok else "stale", "detail": why, "cycles": scheduler.cycles}
        return web.json_response(body, status=200 if ok else 503)

    async def index_handler(request: web.Request) -> web.Response:
        text = status_page() if status_page is not None else INDEX
        return web.Response(
            text=text, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    middlewares = []
    if web_config is not None and web_config.basic_auth_users:
        middlewares.append(basic_auth_middleware(PasswordChecker(web_config.basic_auth_users)))
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health_handler)
    app.router.add_get("/", index_handler)
    return app


async def start_server(
    app: web.Application, host: str, port: int, web_config: WebConfig | None = None
) -> web.AppRunner:
    """Listen on host:port (TLS if `web_config` says so); returns the runner to clean up with
    `await runner.cleanup()`."""
    secured = web_config is not None and web_config.secures
    if not ipaddress.ip_address(host).is_loopback and not secured:
        # Only reachable with agent.insecure_listen (web.listen_policy refuses otherwise).
        log.warning(
            "serving metrics on %s, beyond loopback, without TLS or authentication: "
            "anyone who can reach it can read what this vantage measures",
            host,
        )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = ssl_context(web_config) if web_config is not None else None
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    return runner
