"""Censors that work on the transfer, not the connection (issue 22), each with recovery, in
two namespaces of their own (a client and a server on one veth, kernel filtering on the
server's side of it), so that they cost seconds and not the whole lab:

- a data-volume freeze: nftables drops the server's packets once the connection's reply
  direction carried 16 KB (`ct reply bytes`), over HTTP and HTTPS: the small page is
  reachable, the volume probe (`min_bytes`) is "stalled after N bytes";
- throttling at 128 kbit/s (tc tbf on the server's egress): the small page is reachable, the
  large object is `http_slow`, "still arriving at R B/s", with its throughput in the facts;
- a resolver whose UDP answers are all truncated and whose TCP port is filtered: the DNS step
  keeps the truncated UDP answer in its detail and data.

What one vantage cannot tell apart (docs/lab.md): the throttle here is on the address, where
Russia's 2021 one keyed on the SNI; the agent sees the same slow transfer either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from simlab import Pki
from tests.lab import netns
from tests.lab.procs import die_with_parent
from tests.lab.topology import skip_unless_lab_can_run

skip_unless_lab_can_run()

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]

PREFIX = os.environ.get("REACHPROBE_LAB_PREFIX", "rpl-") + "xfer-"
CLIENT, SERVER = PREFIX + "c", PREFIX + "s"
CLIENT_ADDRESS, SERVER_ADDRESS = "198.18.200.1", "198.18.200.2"
FREEZE_BYTES = 16 * 1024
# Large enough to take seconds at 128 kbit/s, small enough for one command-line argument.
LARGE_BODY = "<!doctype html><title>large</title>" + "z" * 100_000
SMALL_BODY = "<!doctype html><title>small</title><p>small page</p>"
NAMES = ("small.xfer.test", "large.xfer.test")
ZONE = {**{name: [SERVER_ADDRESS] for name in NAMES},
        "tc.xfer.test": {"kind": "truncate", "addresses": [SERVER_ADDRESS]}}  # fmt: skip
REPO = Path(__file__).resolve().parents[2]


class World:
    """The two namespaces, their servers and the agent's config."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for ns in (CLIENT, SERVER):
            netns.destroy(ns)
            netns.create(ns)
        netns.veth(CLIENT, "xfer0", SERVER, "xfer0")
        netns.add_address(CLIENT, "xfer0", f"{CLIENT_ADDRESS}/30")
        netns.add_address(SERVER, "xfer0", f"{SERVER_ADDRESS}/30")
        # `ct ... bytes` counts only with conntrack accounting on.
        netns.sysctl(SERVER, "net.netfilter.nf_conntrack_acct", "1")
        pki = Pki(self.workdir)
        cert, key = pki.issue_files("xfer", *NAMES)
        tls = ("--cert", str(cert), "--key", str(key))
        zone = self.workdir / "zone.yaml"
        zone.write_text(yaml.safe_dump(ZONE))
        servers = [
            ("dns", "--listen", f"{SERVER_ADDRESS}:53", "--zone", str(zone)),
            ("web", "--listen", f"{SERVER_ADDRESS}:80", "--mode", "valid", "--body", LARGE_BODY),
            ("web", "--listen", f"{SERVER_ADDRESS}:443", "--mode", "valid",
             "--body", LARGE_BODY, *tls),
            ("web", "--listen", f"{SERVER_ADDRESS}:8080", "--mode", "valid", "--body", SMALL_BODY),
            ("web", "--listen", f"{SERVER_ADDRESS}:8443", "--mode", "valid",
             "--body", SMALL_BODY, *tls),
        ]  # fmt: skip
        for argv in servers:
            self.procs.append(
                subprocess.Popen(
                    [*netns.ns_prefix(SERVER), sys.executable, "-m", "simlab", *argv],
                    cwd=REPO,
                    preexec_fn=die_with_parent,
                )
            )
        deadline = time.monotonic() + 20
        for port in (80, 443, 8080, 8443):
            netns.wait_tcp(CLIENT, (SERVER_ADDRESS, port), deadline)
        self.config = self.workdir / "agent.yaml"
        self.config.write_text(yaml.safe_dump(self.agent_config(str(pki.ca_file))))

    def agent_config(self, ca_file: str) -> dict[str, object]:
        def url(scheme: str, name: str, port: int, path: str = "/") -> str:
            return f"{scheme}://{name}:{port}{path}"

        volume = {"min_bytes": True}
        return {
            "agent": {"timeout": "3s", "listen": None, "concurrency": 8},
            "resolvers": {
                "test": {"type": "udp", "servers": [f"{SERVER_ADDRESS}:53"]},
                "bogon_exempt": ["198.18.0.0/15"],
                "injection_window": "50ms",
            },
            "tls": {"ca_file": ca_file},
            "targets": [
                {"name": "small-http", "url": url("http", NAMES[0], 8080)},
                {"name": "small-https", "url": url("https", NAMES[0], 8443)},
                {"name": "large-http", "url": url("http", NAMES[1], 80, "/big.bin"), **volume},
                {"name": "large-https", "url": url("https", NAMES[1], 443, "/big.bin"), **volume},
                {"name": "tc-dns", "url": url("http", "tc.xfer.test", 8080)},
            ],
        }

    def check(self) -> dict[str, dict]:
        """`reachprobe check --format json` from the client namespace: target -> report."""
        proc = subprocess.run(
            [*netns.ns_prefix(CLIENT), sys.executable, "-m", "agent", "check",
             "--config", str(self.config), "--format", "json"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        report = json.loads(proc.stdout)
        return {t["name"]: t for t in report["targets"]}

    def nft(self, rules: str) -> None:
        script = "table inet xfer\ndelete table inet xfer\n"
        if rules:
            script += (
                "table inet xfer {\n  chain output { type filter hook output priority 0;\n"
                f"    {rules}\n  }}\n}}\n"
            )
        netns.run(["nft", "-f", "-"], ns=SERVER, input=script)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in (CLIENT, SERVER):
            netns.destroy(ns)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    instance = World(tmp_path_factory.mktemp("xfer"))
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def step(report: dict, kind: str) -> dict:
    """The first report of step `kind` in a target's `check` entry."""
    return next(s for s in report["steps"] if s["step"] == kind)


def test_a_volume_freeze_spares_the_small_page_and_stalls_the_volume_probe(world: World) -> None:
    world.nft(f"ip daddr {CLIENT_ADDRESS} ct reply bytes > {FREEZE_BYTES} drop")
    try:
        found = world.check()
    finally:
        world.nft("")
    for name in ("small-http", "small-https"):
        assert found[name]["verdict"] == "reachable", found[name]
    for name in ("large-http", "large-https"):
        http = step(found[name], "http")
        assert http["result"] == "http_timeout", http
        assert str(http["detail"]).startswith("stalled after "), http
        # What came is about the freeze's threshold (the head and the handshake count).
        assert 8_000 < http["data"]["received_bytes"] <= FREEZE_BYTES + 4096, http
    assert "TLS records" in step(found["large-https"], "http")["detail"]
    recovered = world.check()
    for name in ("small-http", "small-https", "large-http", "large-https"):
        assert recovered[name]["verdict"] == "reachable", recovered[name]
    assert "(volume probe)" in step(recovered["large-https"], "http")["detail"]


def throttle(ns: str, rate: str, ports: tuple[int, ...]) -> None:
    """Shape what the server sends from each of `ports` to `rate`, as a censor throttling a
    service does (by SNI in 2021's Russia; here by the service's port), other traffic
    untouched. One htb class per port holds a tbf (veth hands over GSO super-packets, which
    tbf cuts into segments and htb alone would let through whole); a class per port, because
    a censor's throttle is per flow and this kernel has no fair-queueing qdisc to share one."""
    commands = ["qdisc replace dev xfer0 root handle 1: htb"]
    for n, port in enumerate(ports, start=1):
        commands += [
            f"class add dev xfer0 parent 1: classid 1:{n} htb rate 10gbit",
            f"qdisc add dev xfer0 parent 1:{n} handle {n + 10}: tbf rate {rate} burst 1600 "
            "latency 5s",
            f"filter add dev xfer0 parent 1: protocol ip u32 match ip sport {port} 0xffff "
            f"flowid 1:{n}",
        ]
    for command in commands:
        netns.run(["tc", *command.split()], ns=ns)


def test_throttling_at_128_kbit_is_slow_not_blocked(world: World) -> None:
    throttle(SERVER, "128kbit", ports=(80, 443))
    try:
        found = world.check()
    finally:
        netns.run(["tc", "qdisc", "del", "dev", "xfer0", "root"], ns=SERVER)
    for name in ("small-http", "small-https"):
        assert found[name]["verdict"] == "reachable", found[name]
    for name in ("large-http", "large-https"):
        http = step(found[name], "http")
        assert http["result"] == "http_slow", http
        assert found[name]["verdict"] == "inconclusive", found[name]
        assert "still arriving at" in str(http["detail"]), http
        assert "bytes_per_second" in http["data"], http
        rate = http["data"]["bytes_per_second"]
        assert 4_000 < rate < 24_000, http  # 128 kbit/s is 16,000 B/s on the wire
        assert http["data"]["longest_gap_seconds"] < 1.0, http
    recovered = world.check()
    assert step(recovered["large-http"], "http")["result"] == "ok", recovered["large-http"]


def test_a_truncated_answer_whose_tcp_retry_is_filtered_keeps_the_udp_outcome(
    world: World,
) -> None:
    world.nft(f"ip daddr {CLIENT_ADDRESS} tcp sport 53 drop")
    try:
        found = world.check()
    finally:
        world.nft("")
    dns = step(found["tc-dns"], "dns")
    assert dns["result"] == "dns_timeout", dns
    assert "UDP answer truncated (" in str(dns["detail"]), dns
    assert dns["data"]["truncated_udp_bytes"] > 0, dns
