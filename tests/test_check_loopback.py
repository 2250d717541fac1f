"""End to end: the real `python -m agent check` against the loopback lab's real servers.

One `check --format json` run probes every target below (the agent probes them concurrently,
so the whole matrix costs about one timeout); each test then reads its target's result. The
exit code and `validate` tests run the CLI on their own small configs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from probes.taxonomy import OONI_FAILURE
from simlab.background import BackgroundLoop
from simlab.loopback import BOGON_ADDRESS, HOST, SNI_BLOCKED, LoopbackLab

REPO_ROOT = Path(__file__).resolve().parents[1]

WriteConfig = Callable[..., Path]
# A bound on one CLI run: the agent's timeout is 1s, the DNS injection window 0.3s.
RUN_TIMEOUT = 30
AGENT_TIMEOUT = 1.0  # LoopbackLab.config's agent.timeout
OK, SKIPPED = "ok", "skipped"


Target = Callable[[LoopbackLab], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    """A target (built from the lab's ports), and the (step, result) sequence and verdict the
    agent must report for it."""

    name: str
    target: Target
    steps: tuple[tuple[str, str], ...]
    verdict: str


def url(role: str, hostname: str, scheme: str | None = None, **extra: Any) -> Target:
    """A URL target naming `hostname` and reaching the lab server playing `role`."""
    return lambda lab: {"url": lab.url(role, hostname, scheme), **extra}


def chain(
    *results: str, steps: tuple[str, ...] = ("dns", "tcp", "tls", "http")
) -> tuple[tuple[str, str], ...]:
    """(step, result) pairs for a chain whose first steps gave `results`; the rest skipped."""
    padded = [*results, *[SKIPPED] * (len(steps) - len(results))]
    return tuple(zip(steps, padded, strict=True))


HTTP_STEPS = ("dns", "tcp", "http")
CASES = [
    # Success, and what must not count as a failure.
    Case(
        "ok-https",
        url("https", "valid.test", expect_status=[200], expect_body="hello"),
        chain(OK, OK, OK, OK),
        "reachable",
    ),
    Case("ok-http", url("http", "valid.test"), chain(OK, OK, OK, steps=HTTP_STEPS), "reachable"),
    Case(
        "ok-host-tls",
        lambda lab: {"host": "valid.test", "port": lab.port("https"), "tls": True},
        chain(OK, OK, OK, steps=("dns", "tcp", "tls")),
        "reachable",
    ),
    Case("ok-tcp", lambda lab: {"tcp": f"{HOST}:{lab.port('https')}"}, (("tcp", OK),), "reachable"),
    Case(
        "redirect-same-host",
        url("redirect", "valid.test", expect_status=[200], expect_body="hello"),
        chain(OK, OK, OK, steps=HTTP_STEPS),
        "reachable",
    ),
    # The control resolver disagrees, but the certificate validates for the name.
    Case(
        "dns-confirmed-by-tls", url("https", "confirmed.test"), chain(OK, OK, OK, OK), "reachable"
    ),
    # DNS.
    *(
        Case(
            f"dns-{kind}",
            url("https", f"{name}.test"),
            chain(code),
            "dns_blocking",
        )
        for kind, name, code in [
            ("nxdomain", "nx", "dns_nxdomain"),
            ("no-answer", "nodata", "dns_no_answer"),
            ("servfail", "servfail", "dns_servfail"),
            ("refused", "refused", "dns_refused"),
            ("timeout", "silent", "dns_timeout"),
            ("injected", "inject", "dns_injected"),
        ]
    ),
    # A bogon answer, alone or beside a public address: the port is the trap's, so that a
    # connection to the bogon address would be counted (test_bogon_answer_is_never_connected_to).
    *(
        Case(
            f"dns-{name}",
            lambda lab, name=name: {"url": f"https://{name}.test:{lab.trap.port}/"},
            chain("dns_bogon"),
            "dns_blocking",
        )
        for name in ("bogon", "mixed")
    ),
    Case(
        "dns-inconsistent",
        url("wrongname", "inconsistent.test"),
        chain("dns_inconsistent", OK, "tls_hostname_mismatch"),
        "dns_blocking",
    ),
    # TCP.
    Case(
        "tcp-refused",
        lambda lab: {"url": f"https://valid.test:{lab.closed_port}/"},
        chain(OK, "tcp_refused"),
        "tcp_ip_blocking",
    ),
    Case(
        "tcp-refused-ip",
        lambda lab: {"tcp": f"{HOST}:{lab.closed_port}"},
        (("tcp", "tcp_refused"),),
        "tcp_ip_blocking",
    ),
    # TLS.
    *(
        Case(f"tls-{mode}", url(role, name, "https"), chain(OK, OK, code), "tls_blocking")
        for mode, role, name, code in [
            ("reset", "reset", "valid.test", "tls_reset"),
            ("eof", "eof", "valid.test", "tls_eof"),
            ("timeout", "silent", "valid.test", "tls_timeout"),
            ("alert", "alert", "valid.test", "tls_alert"),
            ("cert-invalid", "untrusted", "untrusted.test", "tls_cert_invalid"),
            ("hostname-mismatch", "wrongname", "wrongname.test", "tls_hostname_mismatch"),
            # Reset for its name only: the SNI re-check gets through (test_sni_recheck).
            ("sni", "sni", SNI_BLOCKED, "tls_reset"),
        ]
    ),
    # HTTP.
    Case(
        "http-blockpage",
        url("blockpage", "blocked.test"),
        chain(OK, OK, "http_blockpage", steps=HTTP_STEPS),
        "http_blocking",
    ),
    Case(
        "http-blockpage-redirect",
        url("redirect-away", "valid.test"),
        chain(OK, OK, "http_blockpage", steps=HTTP_STEPS),
        "http_blocking",
    ),
    Case(
        "http-status-mismatch",
        url("status", "valid.test", expect_status=[200]),
        chain(OK, OK, "http_status_mismatch", steps=HTTP_STEPS),
        "http_blocking",
    ),
    Case(
        "http-body-mismatch",
        url("https", "valid.test", expect_body="goodbye"),
        chain(OK, OK, OK, "http_body_mismatch"),
        "http_blocking",
    ),
    *(
        Case(
            f"http-{mode}",
            url(role, "valid.test", "http"),
            chain(OK, OK, code, steps=HTTP_STEPS),
            "http_blocking",
        )
        for mode, role, code in [
            ("reset", "reset", "http_reset"),
            ("eof", "eof", "http_eof"),
            ("timeout", "silent", "http_timeout"),
        ]
    ),
]
CASES_BY_NAME = {case.name: case for case in CASES}


def resolve_target(lab: LoopbackLab, case: Case) -> dict[str, Any]:
    """The case's target config for this lab."""
    return {"name": case.name, **case.target(lab)}


def run_agent(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run `python -m agent ARGS` from the repository root (always with an explicit config)."""
    assert "--config" in args, "never run the agent on its shipped (public) targets"
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check_json(config: Path, *targets: str) -> tuple[int, dict[str, Any]]:
    """Run `check --format json` and return (exit code, parsed output)."""
    selection = [arg for name in targets for arg in ("--target", name)]
    proc = run_agent("check", "--config", str(config), "--format", "json", *selection)
    assert proc.stdout, f"no output (exit {proc.returncode}): {proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


@dataclass
class FullRun:
    """The one check run over every case."""

    exit_code: int
    targets: dict[str, dict[str, Any]]
    trap_connections: int


@pytest.fixture(scope="module")
def full_run(
    session_lab: LoopbackLab, server_loop: BackgroundLoop, tmp_path_factory: pytest.TempPathFactory
) -> FullRun:
    """Run the agent once over all cases (module-scoped: the run is the expensive part)."""
    lab = session_lab
    config = lab.write_config(
        tmp_path_factory.mktemp("check") / "agent.yaml", [resolve_target(lab, c) for c in CASES]
    )
    trap_before = lab.trap.connections
    code, output = check_json(config)
    return FullRun(
        exit_code=code,
        targets={t["name"]: t for t in output["targets"]},
        trap_connections=lab.trap.connections - trap_before,
    )


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_step_results(full_run: FullRun, name: str) -> None:
    """Each target reports exactly its expected chain of (step, result)."""
    steps = full_run.targets[name]["steps"]
    assert tuple((s["step"], s["result"]) for s in steps) == CASES_BY_NAME[name].steps, steps


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_verdicts(full_run: FullRun, name: str) -> None:
    assert full_run.targets[name]["verdict"] == CASES_BY_NAME[name].verdict


def test_every_target_reported_once(full_run: FullRun) -> None:
    assert sorted(full_run.targets) == sorted(CASES_BY_NAME)


def test_steps_carry_ooni_failure_duration_and_address(full_run: FullRun) -> None:
    for target in full_run.targets.values():
        for step in target["steps"]:
            assert step["ooni_failure"] == OONI_FAILURE[step["result"]], step
            # A step that ran took time; one that did not run took none; a timeout is only
            # reported once the step has waited for it (a lower bound: load cannot break it).
            duration = step["duration_seconds"]
            if step["result"] == SKIPPED:
                assert duration == 0, step
            elif step["result"].endswith("_timeout"):
                assert duration >= 0.9 * AGENT_TIMEOUT, step
            else:
                assert duration > 0, step
            if step["step"] != "dns" and step["result"] != SKIPPED:
                # Every probe went to a lab server on 127.0.0.1 (tcp/tls/http name the address).
                assert step["address"].startswith(f"{HOST}:"), step


@pytest.mark.parametrize("name", ["dns-bogon", "dns-mixed"])
def test_bogon_answer_is_never_connected_to(full_run: FullRun, name: str) -> None:
    """A bogon answer, alone or beside a public address, is never connected to: the trap on
    the bogon address listens on the port these targets name, the agent's would-be port."""
    steps = full_run.targets[name]["steps"]
    assert BOGON_ADDRESS in steps[0]["detail"]
    assert not [s for s in steps if s["step"] != "dns" and s["result"] != SKIPPED]
    assert not [s for s in steps if BOGON_ADDRESS in (s["address"] or "")]
    assert full_run.trap_connections == 0


@pytest.mark.parametrize("name", ["tls-reset", "tls-eof", "tls-timeout", "tls-sni"])
def test_sni_recheck(full_run: FullRun, name: str) -> None:
    """Every handshake failure a name filter causes is re-checked with an innocuous name, and
    the report says when the name made the difference (only the `sni` server's does)."""
    tls = next(s for s in full_run.targets[name]["steps"] if s["step"] == "tls")
    recheck = tls["data"]["control_sni"]
    sni_based = name == "tls-sni"
    assert recheck.get("triggered", False) is sni_based, recheck
    assert ("SNI-based" in tls["detail"]) is sni_based, tls["detail"]
    assert (recheck["result"] == tls["result"]) is not sni_based, recheck


def test_blockpage_detail_names_the_fingerprint(full_run: FullRun) -> None:
    http = {
        n: full_run.targets[n]["steps"][-1] for n in ("http-blockpage", "http-blockpage-redirect")
    }
    assert "lab-isp" in http["http-blockpage"]["detail"]
    assert "ru-rostelecom-ipcenter" in http["http-blockpage-redirect"]["detail"]


def test_check_exits_1_when_something_is_unreachable(full_run: FullRun) -> None:
    assert full_run.exit_code == 1


def test_check_exits_0_when_the_selected_targets_are_reachable(
    lab: LoopbackLab, write_config: WriteConfig
) -> None:
    config = write_config([resolve_target(lab, c) for c in CASES])
    code, output = check_json(config, "ok-https", "ok-tcp")
    assert code == 0
    assert [t["name"] for t in output["targets"]] == ["ok-https", "ok-tcp"]
    assert output["agent"]["vantage"] == "loopback"
    assert output["prefixes"] == []


def test_check_table_format(lab: LoopbackLab, write_config: WriteConfig) -> None:
    config = write_config(
        [resolve_target(lab, CASES_BY_NAME[n]) for n in ("ok-tcp", "dns-nxdomain")]
    )
    proc = run_agent("check", "--config", str(config), "--format", "table")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any("ok-tcp" in line and "reachable" in line for line in lines)
    assert any("dns-nxdomain" in line and "dns_blocking" in line for line in lines)


def test_check_unknown_target_is_bad_usage(lab: LoopbackLab, write_config: WriteConfig) -> None:
    config = write_config([resolve_target(lab, CASES_BY_NAME["ok-tcp"])])
    proc = run_agent("check", "--config", str(config), "--target", "no-such-target")
    assert proc.returncode == 2
    assert "no-such-target" in proc.stderr


def test_validate_accepts_the_lab_config(lab: LoopbackLab, write_config: WriteConfig) -> None:
    config = write_config([resolve_target(lab, c) for c in CASES])
    assert run_agent("validate", "--config", str(config)).returncode == 0


BROKEN_CONFIGS = [
    pytest.param(lambda cfg: cfg["targets"][1].update(bogus=1), "targets[1].bogus", id="unknown"),
    pytest.param(lambda cfg: cfg["agent"].update(timeout="soon"), "agent.timeout", id="duration"),
    pytest.param(
        lambda cfg: cfg["resolvers"]["test"].update(type="carrier-pigeon"),
        "resolvers.test.type",
        id="resolver-type",
    ),
    pytest.param(
        lambda cfg: cfg["targets"][0].update(url="ftp://valid.test/"), "targets[0].url", id="url"
    ),
]


@pytest.mark.parametrize(("mutate", "key_path"), BROKEN_CONFIGS)
@pytest.mark.parametrize("command", ["validate", "check"])
def test_bad_config_exits_2_naming_file_and_key(
    lab: LoopbackLab, tmp_path: Path, command: str, mutate: Any, key_path: str
) -> None:
    config = lab.config([resolve_target(lab, CASES_BY_NAME[n]) for n in ("ok-https", "ok-tcp")])
    mutate(config)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run_agent(command, "--config", str(path))
    assert proc.returncode == 2
    problem = [line for line in proc.stderr.splitlines() if key_path in line]
    assert problem, proc.stderr
    assert str(path) in problem[0]


def test_agent_asked_the_lab_resolvers(full_run: FullRun, lab: LoopbackLab) -> None:
    # The names exist only in the lab's zones: answers prove which resolvers were used, and
    # these records prove that the agent asked them over the configured transports.
    assert ("udp", "valid.test.", "A") in lab.dns.queries
    assert ("doh", "confirmed.test.", "A") in lab.doh.queries
