"""Vantage health without canaries: a test resolver that refuses, or cannot be reached, for
every name of a cycle is the vantage's problem (`vantage_down`, with the reason), not
`dns_blocking` for every target; one name refused while others resolve stays evidence about
that name. Real resolvers on loopback: an address on 127.0.0.x where nothing listens (the
kernel answers ICMP port unreachable), and simlab's DNS server refusing one name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from measure.report import TargetReport, VantageHealth
from measure.vantage import RESOLVER_DOWN_NOTE, adjust, resolver_failures
from measure.verdict import Verdict
from probes.results import StepResult
from probes.taxonomy import Code, Step
from simlab.background import BackgroundLoop
from simlab.dns import DnsServer
from simlab.net import closed_port, format_hostport
from simlab.zone import Behaviour, Zone

REPO_ROOT = Path(__file__).resolve().parents[1]
DEAD_RESOLVER_HOST = "127.0.0.77"  # on loopback, and nothing of this suite listens there
RUN_TIMEOUT = 30


def check(tmp_path: Path, resolver: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """`reachprobe check --format json` on a config whose only resolver is `resolver`."""
    config = {
        "agent": {"vantage": "resolver-test", "timeout": "1s", "listen": "127.0.0.1:0"},
        "resolvers": {"test": {"type": "udp", "servers": [resolver]}},
        "targets": targets,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def verdicts(doc: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["verdict"] for t in doc["targets"]}


def test_a_resolver_nothing_listens_on_is_the_vantage_down_not_blocking(tmp_path: Path) -> None:
    dead = format_hostport(DEAD_RESOLVER_HOST, closed_port(DEAD_RESOLVER_HOST))
    listener = format_hostport("127.0.0.1", closed_port("127.0.0.1"))
    doc = check(
        tmp_path,
        dead,
        [
            {"name": "news", "host": "news.test", "port": 443},
            {"name": "video", "host": "video.test", "port": 443},
            {"name": "literal", "tcp": listener},
        ],
    )
    assert doc["vantage"]["resolver_down"] is True
    assert doc["vantage"]["resolver_failures"] == ["dns_refused"]
    by_name = {t["name"]: t for t in doc["targets"]}
    for name in ("news", "video"):
        assert by_name[name]["verdict"] == "vantage_down", by_name[name]
        assert by_name[name]["local_verdict"] == "dns_blocking"
        assert "resolver is down" in by_name[name]["note"]
        assert "dns_refused" in by_name[name]["note"]
    # Not a DNS failure: a target with an address of its own keeps its measured verdict.
    assert by_name["literal"]["verdict"] == "tcp_ip_blocking"


@pytest.fixture
def refusing_one_name() -> Any:
    """simlab's real DNS server on loopback: one name refused, the others answered."""
    zone = Zone(
        {
            "news.test": Behaviour("answer", ("127.0.0.1",)),
            "video.test": Behaviour("answer", ("127.0.0.1",)),
            "blocked.test": Behaviour("refused"),
        }
    )
    loop = BackgroundLoop()
    server = DnsServer(zone, "127.0.0.1")
    try:
        loop.run(server.start())
        yield format_hostport("127.0.0.1", server.port)
    finally:
        loop.run(server.close())
        loop.close()


def test_one_name_refused_while_others_resolve_is_evidence_about_that_name(
    tmp_path: Path, refusing_one_name: str
) -> None:
    port = closed_port("127.0.0.1")
    doc = check(
        tmp_path,
        refusing_one_name,
        [{"name": n, "host": f"{n}.test", "port": port} for n in ("news", "video", "blocked")],
    )
    assert doc["vantage"]["resolver_down"] is False
    assert verdicts(doc)["blocked"] == "dns_blocking"


def lookup(code: Code, detail: str = "") -> StepResult:
    return StepResult(Step.DNS, code, detail=detail)


@pytest.mark.parametrize(
    ("lookups", "down"),
    [
        ([lookup(Code.DNS_REFUSED), lookup(Code.DNS_REFUSED)], (Code.DNS_REFUSED,)),
        # An unreachable resolver: no code of its own, the errno's text as the detail.
        (
            [lookup(Code.DNS_ERROR, "No route to host"), lookup(Code.DNS_REFUSED)],
            (Code.DNS_ERROR, Code.DNS_REFUSED),
        ),
        ([lookup(Code.DNS_REFUSED)], ()),  # one name: no contrast, so no conclusion
        ([lookup(Code.DNS_REFUSED), lookup(Code.OK)], ()),
        ([lookup(Code.DNS_REFUSED), lookup(Code.DNS_TIMEOUT)], ()),
        ([lookup(Code.DNS_ERROR, "bad label"), lookup(Code.DNS_REFUSED)], ()),
    ],
)
def test_resolver_failures(lookups: list[StepResult], down: tuple[Code, ...]) -> None:
    assert resolver_failures(lookups) == down


def test_adjust_leaves_other_dns_failures_alone() -> None:
    from measure.plan import TargetPlan

    health = VantageHealth(resolver_failures=(Code.DNS_REFUSED,), resolver_detail="refused")
    target = TargetPlan.__new__(TargetPlan)
    refused = TargetReport(target, Verdict.DNS_BLOCKING, dns=lookup(Code.DNS_REFUSED))
    bogon = TargetReport(target, Verdict.DNS_BLOCKING, dns=lookup(Code.DNS_BOGON))
    assert adjust(refused, health).verdict == Verdict.VANTAGE_DOWN
    assert adjust(refused, health).note == RESOLVER_DOWN_NOTE.format(why="dns_refused: refused")
    assert adjust(bogon, health) is bogon
