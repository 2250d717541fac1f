"""agent.web_config: TLS and bcrypt basic auth on the metrics server (exporter-toolkit format).

The loader is tested directly; the server as a user meets it: `reachprobe run` in a subprocess,
reached with real TLS clients (aiohttp over ssl, trustme certificates).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest

from agent.config import ConfigError, parse_config
from agent.config.web import listen_policy, load_web_config
from agent.webauth import PasswordChecker
from simlab import Pki, client_context, closed_port
from tests.agent_process import RunningAgent, run_cli, start_agent, write_yaml

HOST = "127.0.0.1"
PASSWORD = "correct horse"


def hashed(password: str, rounds: int = 4) -> str:
    """A bcrypt hash (cost 4 keeps the tests fast; the cost is in the hash, as in htpasswd)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def server_files(pki: Pki) -> dict[str, str]:
    cert, key = pki.issue_files("server", HOST)
    return {"cert_file": str(cert), "key_file": str(key)}


def client_cert_context(pki: Pki, *, trusted: bool = True) -> ssl.SSLContext:
    """A client context trusting the server's CA and presenting a client certificate."""
    ctx = client_context(pki.trusted)
    pki.issue("scraper@example.test", trusted=trusted).configure_cert(ctx)
    return ctx


def agent_config(tmp_path: Path, port: int, web: dict[str, Any] | None) -> Path:
    """An agent with no targets (nothing is probed) serving on loopback with `web` as its
    web config."""
    agent: dict[str, Any] = {"listen": f"{HOST}:{port}", "interval": "1s", "timeout": "1s"}
    if web is not None:
        agent["web_config"] = str(write_yaml(tmp_path / "web.yaml", web))
    return write_yaml(
        tmp_path / "agent.yaml",
        {
            "agent": agent,
            "resolvers": {"test": {"type": "udp", "servers": [f"{HOST}:{closed_port()}"]}},
            "targets": [],
        },
    )


@pytest.fixture
async def serve(tmp_path: Path, pki: Pki) -> AsyncIterator[Any]:
    """Start an agent with a given web config; stopped at the end of the test."""
    started: list[RunningAgent] = []

    async def start(web: dict[str, Any], **client: Any) -> RunningAgent:
        port = closed_port()
        scheme = "https" if "tls_server_config" in web else "http"
        agent = await start_agent(
            agent_config(tmp_path, port, web), (HOST, port), scheme=scheme, **client
        )
        started.append(agent)
        return agent

    yield start
    for agent in started:
        await agent.kill()


# --- the loader ---------------------------------------------------------------------------


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    return load_web_config(write_yaml(tmp_path / "web.yaml", data))


def test_paths_are_relative_to_the_web_config_file(tmp_path: Path, pki: Pki) -> None:
    pki.issue_files("server", HOST)
    tls = {"cert_file": "pki/server.pem", "key_file": "pki/server-key.pem",
           "client_ca_file": "pki/ca.pem",
           "client_auth_type": "RequireAndVerifyClientCert"}  # fmt: skip
    web = load(tmp_path, {"tls_server_config": tls})
    assert web.tls_server_config.cert_file == tmp_path / "pki" / "server.pem"
    assert web.tls_server_config.client_ca_file == tmp_path / "pki" / "ca.pem"


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"basic_auth_users": {"alice": "plaintext"}}, "basic_auth_users", "not a bcrypt hash"),
        ({"basic_auth_users": {"alice": "$2b$20$" + "a" * 53}}, "basic_auth_users", "too slow"),
        ({"basic_auth_users": {"a:b": hashed(PASSWORD)}}, "basic_auth_users", "cannot contain"),
        ({"basic_auth_user": {}}, "basic_auth_user", "unknown key"),
        ({"tls_server_config": {"cert_file": "missing.pem", "key_file": "missing-key.pem"}},
         "tls_server_config.cert_file", "cannot load"),
        ({"tls_server_config": {"cert_file": "a", "key_file": "b",
                                "client_auth_type": "RequireAndVerifyClientCert"}},
         "tls_server_config", "needs client_ca_file"),
        ({"tls_server_config": {"cert_file": "a", "key_file": "b", "client_ca_file": "c"}},
         "tls_server_config", "client_auth_type is NoClientCert"),
        ({"tls_server_config": {"cert_file": "a", "key_file": "b",
                                "client_auth_type": "VerifyEverything"}},
         "tls_server_config.client_auth_type", "RequireAndVerifyClientCert"),
        ({"tls_server_config": {"key_file": "b"}}, "tls_server_config.cert_file", "required"),
    ],
)  # fmt: skip
def test_a_bad_web_config_names_the_file_and_the_key(
    tmp_path: Path, data: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, data)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'web.yaml'}: {key}: "), message
    assert reason in message


def test_a_web_config_that_is_not_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text("basic_auth_users: {alice: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_web_config(path)


def test_a_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    cert, _ = pki.issue_files("one", HOST)
    _, other_key = pki.issue_files("two", HOST)
    with pytest.raises(ConfigError, match=r"tls_server_config\.cert_file: cannot load"):
        load(tmp_path, {"tls_server_config": {"cert_file": str(cert), "key_file": str(other_key)}})


# --- who may listen where -------------------------------------------------------------------


def agent_section(tmp_path: Path, listen: str, **agent: Any) -> Any:
    return parse_config({"agent": {"listen": listen, **agent}}, "agent.yaml", tmp_path).agent


@pytest.mark.parametrize("listen", ["0.0.0.0:9787", "192.0.2.1:9787", "[::]:9787"])
def test_listening_beyond_loopback_without_web_config_is_refused(
    tmp_path: Path, listen: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        listen_policy(agent_section(tmp_path, listen), "agent.yaml")
    message = str(caught.value)
    assert message.startswith("agent.yaml: agent.listen: ")
    for fix in ("agent.web_config", "insecure_listen", "docs/security.md"):
        assert fix in message


def test_a_web_config_without_tls_or_users_does_not_count(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text("{}\n")
    section = agent_section(tmp_path, "0.0.0.0:9787", web_config="web.yaml")
    with pytest.raises(ConfigError, match=r"agent\.listen"):
        listen_policy(section, "agent.yaml")


def test_loopback_basic_auth_and_the_opt_out_are_allowed(tmp_path: Path) -> None:
    assert listen_policy(agent_section(tmp_path, "127.0.0.1:9787"), "a") is None
    assert listen_policy(agent_section(tmp_path, "[::1]:9787"), "a") is None
    insecure = agent_section(tmp_path, "0.0.0.0:9787", insecure_listen=True)
    assert listen_policy(insecure, "a") is None
    write_yaml(tmp_path / "web.yaml", {"basic_auth_users": {"prom": hashed(PASSWORD)}})
    secured = agent_section(tmp_path, "0.0.0.0:9787", web_config="web.yaml")
    web = listen_policy(secured, "a")
    assert web is not None
    assert list(web.basic_auth_users) == ["prom"]


def test_run_refuses_a_bare_non_loopback_listen_with_exit_2(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface: even a regression could not serve on it.
    data = {"agent": {"listen": "192.0.2.1:9787"},
            "resolvers": {"test": {"type": "udp", "servers": ["127.0.0.1"]}}}  # fmt: skip
    config = write_yaml(tmp_path / "agent.yaml", data)
    for command in ("run", "validate"):
        done = run_cli(command, config, timeout=30)
        assert done.returncode == 2, done.stderr
        assert "agent.listen" in done.stderr
        assert "agent.web_config" in done.stderr


def test_validate_reports_a_broken_web_config(tmp_path: Path) -> None:
    web = write_yaml(tmp_path / "web.yaml", {"basic_auth_users": {"prom": "hunter2"}})
    config = write_yaml(tmp_path / "agent.yaml", {"agent": {"web_config": str(web)}})
    done = run_cli("validate", config, timeout=30)
    assert done.returncode == 2
    assert f"{web}: basic_auth_users: " in done.stderr


# --- the server, with real clients -----------------------------------------------------------


async def test_basic_auth_over_tls(serve: Any, pki: Pki) -> None:
    tls = client_context(pki.trusted)
    agent = await serve(
        {"tls_server_config": server_files(pki), "basic_auth_users": {"prom": hashed(PASSWORD)}},
        ssl_context=tls,
        auth=("prom", PASSWORD),
    )
    status, body = await agent.get("/metrics")
    assert status == 200
    assert "reachprobe_agent_info" in body
    assert (await agent.get("/healthz"))[0] in (200, 503)
    for wrong in (("prom", "wrong"), ("mallory", PASSWORD)):
        status, body = await agent.get("/metrics", auth=wrong)
        assert status == 401
        assert "reachprobe_" not in body
    for path in ("/metrics", "/healthz", "/"):
        status, _ = await agent.get(path, auth=None)
        assert status == 401
    # A garbled Authorization header is a 401 too, not a 500.
    status, _ = await agent.get("/metrics", auth=None, headers={"Authorization": "Basic %%%"})
    assert status == 401


async def test_tls_server_rejects_plain_http_and_untrusting_clients(serve: Any, pki: Pki) -> None:
    agent = await serve(
        {"tls_server_config": server_files(pki)}, ssl_context=client_context(pki.trusted)
    )
    assert (await agent.get("/metrics"))[0] == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await agent.get("/metrics", ssl=client_context(pki.untrusted))
    plain = agent.base.replace("https://", "http://")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(plain + "/metrics", timeout=aiohttp.ClientTimeout(5)) as r:
                assert r.status != 200  # reached only if the server answered plain HTTP


async def test_required_client_certificate(serve: Any, pki: Pki) -> None:
    agent = await serve(
        {"tls_server_config": {**server_files(pki), "client_ca_file": str(pki.ca_file),
                               "client_auth_type": "RequireAndVerifyClientCert"}},
        ssl_context=client_cert_context(pki),
    )  # fmt: skip
    assert (await agent.get("/metrics"))[0] == 200
    for without in (client_context(pki.trusted), client_cert_context(pki, trusted=False)):
        with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
            await agent.get("/metrics", ssl=without)


async def test_client_certificate_verified_if_given(serve: Any, pki: Pki) -> None:
    agent = await serve(
        {"tls_server_config": {**server_files(pki), "client_ca_file": str(pki.ca_file),
                               "client_auth_type": "VerifyClientCertIfGiven"}},
        ssl_context=client_context(pki.trusted),
    )  # fmt: skip
    assert (await agent.get("/metrics"))[0] == 200
    assert (await agent.get("/metrics", ssl=client_cert_context(pki)))[0] == 200
    with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        await agent.get("/metrics", ssl=client_cert_context(pki, trusted=False))


async def test_slow_bcrypt_checks_do_not_hold_up_a_known_scraper(serve: Any) -> None:
    # Cost 12 makes every uncached check take a visible while on this machine.
    agent = await serve(
        {"basic_auth_users": {"prom": hashed(PASSWORD, rounds=12)}},
        auth=("prom", PASSWORD),
    )
    assert (await agent.get("/metrics"))[0] == 200  # now cached
    loop = asyncio.get_running_loop()
    start = loop.time()
    guesses = [
        asyncio.create_task(agent.get("/metrics", auth=("prom", f"guess{i}"))) for i in range(4)
    ]
    await asyncio.sleep(0.05)  # the guesses are in, their bcrypt checks queued
    status, _ = await agent.get("/metrics")
    scraped_after = loop.time() - start
    statuses = [status for status, _ in await asyncio.gather(*guesses)]
    guesses_after = loop.time() - start
    assert status == 200
    assert statuses == [401] * 4
    # The guesses are checked one at a time off the loop; the cached scrape passes them all.
    assert scraped_after < guesses_after / 2, (scraped_after, guesses_after)


# --- the password checker --------------------------------------------------------------------


async def test_checks_run_off_the_event_loop() -> None:
    checker = PasswordChecker({"prom": hashed(PASSWORD, rounds=12)})
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def tick() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    start = time.monotonic()
    assert await checker.check("prom", PASSWORD)
    took = time.monotonic() - start
    ticker.cancel()
    # The loop kept turning while bcrypt ran: no tick waited anywhere near the whole check.
    assert max(gaps) < took / 2, (max(gaps), took)


async def test_outcomes_are_cached_per_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, stored: bytes) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    checker = PasswordChecker({"prom": hashed(PASSWORD), "ops": hashed("other")}, cache_size=2)
    assert await checker.check("prom", PASSWORD)
    assert await checker.check("prom", PASSWORD)
    assert not await checker.check("prom", "wrong")
    assert not await checker.check("prom", "wrong")
    assert len(calls) == 2
    assert not await checker.check("ops", PASSWORD)  # another user's password
    assert len(calls) == 3
    assert await checker.check("prom", PASSWORD)  # evicted by the bounded cache: checked again
    assert len(calls) == 4


async def test_unknown_users_fail_even_with_the_dummy_hash_password() -> None:
    checker = PasswordChecker({"prom": hashed(PASSWORD)})
    assert not await checker.check("nobody", PASSWORD)
    assert not await checker.check("", "")


async def test_htpasswd_2y_hashes_are_accepted(tmp_path: Path) -> None:
    web = load(tmp_path, {"basic_auth_users": {"prom": "$2y$" + hashed(PASSWORD)[4:]}})
    assert await PasswordChecker(web.basic_auth_users).check("prom", PASSWORD)
