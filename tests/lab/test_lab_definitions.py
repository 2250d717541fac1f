"""The lab's definitions, checked without root: the agent and Prometheus accept the configs the
lab writes, the address plan holds together, and the scenarios say what they mean.

These run everywhere, so a mistake in the lab's data shows up even where the lab cannot run.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.config import parse_config
from agent.config.web import listen_policy
from tests.lab import world
from tests.lab.agents import CENSORED_VANTAGE, CONTROL_VANTAGE, agent_config
from tests.lab.censor import SCENARIOS, VANTAGE_WIDE, Scenario
from tests.lab.prometheus import prometheus_config

LAB_NET = ipaddress.ip_network(world.LAB_NET)
LAB_NET6 = ipaddress.ip_network(world.LAB_NET6)
LAB_NETS = [ipaddress.ip_network(n) for n in world.LAB_NETS]


@pytest.mark.parametrize("vantage", [CENSORED_VANTAGE, CONTROL_VANTAGE], ids=lambda v: v.role)
def test_agent_config_is_valid_and_explicit(vantage, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("placeholder; the config only checks that the file exists\n")
    config = parse_config(agent_config(vantage, ca_file), "lab")
    assert config.agent.role == vantage.role
    # Never the system resolver: both resolvers are lab servers.
    assert config.resolvers.test.type == "udp"
    assert config.resolvers.test.servers == [world.DNS_ADDRESS]
    assert config.resolvers.control is not None
    assert config.resolvers.control.url == f"https://{world.DOH_ADDRESS}/dns-query"
    assert {t.name for t in config.targets} == set(world.HOSTS)
    # The vantage health checks contact lab addresses only, and find the lab's canaries.
    assert config.vantage.tcp_canary == world.TCP_CANARY
    assert config.vantage.nxdomain_probe_suffix == world.NXDOMAIN_PROBE_SUFFIX
    canaries = {t.name for t in config.targets if t.group == config.vantage.canary_group}
    assert canaries == {"canary-1", "canary-2"}
    assert config.agent.timeout < config.agent.interval
    # It serves on a lab address with the documented opt-out, which the agent accepts.
    assert config.agent.insecure_listen
    assert listen_policy(config.agent, "lab") is None


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(prometheus_config(list(world.AGENT_LISTEN.values()))))
    proc = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _local_networks(role: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    local = [*world.LOCAL_PREFIXES.get(role, ()), *world.local_addresses6(role)]
    return [ipaddress.ip_network(p) for p in local]


def test_every_address_is_lab_space_and_hosted_where_it_says() -> None:
    for key, host in world.HOSTS.items():
        address = ipaddress.ip_address(host.address)
        assert address in LAB_NET, key
        for hosted in host.addresses:
            assert any(ipaddress.ip_address(hosted) in n for n in _local_networks(host.ns)), key
        if host.address6 is not None:
            assert ipaddress.ip_address(host.address6) in ipaddress.ip_network(world.WEB_NET6)
    for link in world.LINKS:
        for _, _, cidr in link.addresses():
            assert any(ipaddress.ip_interface(cidr).ip in net for net in (LAB_NET, LAB_NET6))
    for _, prefix, via in world.ROUTES:
        assert _in_lab_nets(prefix), prefix
        assert any(ipaddress.ip_address(via) in net for net in (LAB_NET, LAB_NET6))
    for role in world.ROLES:
        assert all(_in_lab_nets(str(local)) for local in _local_networks(role))


def _in_lab_nets(prefix: str) -> bool:
    network = ipaddress.ip_network(prefix)
    # subnet_of raises across families rather than saying no.
    same = [net for net in LAB_NETS if net.version == network.version]
    return any(network.subnet_of(net) for net in same)  # type: ignore[arg-type]


def test_no_default_route_anywhere() -> None:
    """Without a default route a lab process cannot send to the host's network."""
    assert all(prefix not in ("0.0.0.0/0", "::/0", "default") for _, prefix, _ in world.ROUTES)


def test_only_the_dual_stack_hosts_have_ipv6_and_their_paths_route_it() -> None:
    """An IPv6 address on an IPv4-only host would let its IPv4 scenario's target stay
    reachable; the dual-stack hosts' vantages, censor and core all carry IPv6."""
    dual = {k for k, h in world.HOSTS.items() if h.address6 is not None}
    assert dual == {"dual-baseline", "dual-v6-blocked", "dual-v4-blocked"}
    assert all(world.HOSTS[k].ns == world.WEB for k in dual)
    with_v6 = {ns for link in world.LINKS for ns, _, c in link.addresses() if ":" in c}
    assert with_v6 == {world.CENSORED, world.CONTROL, world.CENSOR, world.CORE, world.WEB}
    routed = {role for role, prefix, _ in world.ROUTES if prefix == world.LAB_NET6}
    assert routed == {world.CENSORED, world.CONTROL, world.CENSOR, world.WEB}


def test_scenario_builders_take_the_family_from_the_address() -> None:
    from tests.lab import censor

    assert censor.blackhole("x", "2001:db8::1").forward == ("ip6 daddr 2001:db8::1 drop",)
    assert censor.blackhole("x", "198.18.1.1").forward == ("ip daddr 198.18.1.1 drop",)
    assert censor.tcp_reset("x", "2001:db8::1", 443).forward == (
        "ip6 daddr 2001:db8::1 tcp dport 443 reject with tcp reset",
    )
    assert censor.icmp_unreachable("x", "2001:db8::1", "host-unreachable").forward == (
        "ip6 daddr 2001:db8::1 reject with icmpv6 type addr-unreachable",
    )


def test_cloud_targets_fill_the_blackholed_prefix() -> None:
    prefix = ipaddress.ip_network(world.CLOUD_PREFIX)
    assert len(world.CLOUD_TARGETS) >= 5
    for key in world.CLOUD_TARGETS:
        assert ipaddress.ip_address(world.HOSTS[key].address) in prefix
    outside = [k for k in world.HOSTS if k not in world.CLOUD_TARGETS]
    assert all(ipaddress.ip_address(world.HOSTS[k].address) not in prefix for k in outside)


def test_vantage_health_probes_stay_in_the_lab_and_find_nothing() -> None:
    """The TCP canary is routed but held by no namespace; the NXDOMAIN probe's names are not
    in the zone. So both fail unless a middlebox or a lying resolver is in the way."""
    canary = ipaddress.ip_address(world.TCP_CANARY.rsplit(":", 1)[0])
    assert canary in LAB_NET
    assert any(canary in ipaddress.ip_network(prefix) for _, prefix, _ in world.ROUTES)
    assert not any(canary in net for role in world.ROLES for net in _local_networks(role))
    suffix = world.NXDOMAIN_PROBE_SUFFIX
    assert suffix.endswith("." + world.ZONE)
    assert not [name for name in world.zone_records() if name.endswith(suffix)]


def test_vantage_wide_scenarios_exist() -> None:
    assert set(VANTAGE_WIDE) <= set(SCENARIOS)


@pytest.mark.parametrize(
    ("blocked", "other"),
    [
        ("sni-blocked", "sni-innocent"),
        ("http-rst", "http-rst-innocent"),
        ("residual-blocked", "residual-innocent"),
    ],
)
def test_name_filtered_pair_shares_an_address(blocked: str, other: str) -> None:
    hosts = world.HOSTS
    assert hosts[blocked].address == hosts[other].address
    assert hosts[blocked].name != hosts[other].name
    # A string match on the blocked name must not match the other one.
    assert hosts[blocked].name not in (hosts[other].name or "")


def test_name_filters_reset_or_drop() -> None:
    """`sni` resets the connection, `sni-drop` drops the ClientHello silently, `http-rst`
    resets on the Host header of a plain-HTTP request."""
    rules = {name: SCENARIOS[name].iptables for name in ("sni", "sni-drop", "http-rst")}
    assert all(len(specs) == 1 for specs in rules.values()), rules
    (sni,), (drop,), (http,) = rules.values()
    assert sni[-3:] == ("REJECT", "--reject-with", "tcp-reset")
    assert drop[-1] == "DROP"
    # The same match, on another name: only the action differs.
    match_sni, match_drop = (spec[: spec.index("-j")] for spec in (sni, drop))
    assert match_drop == (*match_sni[:-1], world.HOSTS["sni-dropped"].name)
    assert http[2:4] == ("--dport", "80")
    assert f"Host: {world.HOSTS['http-rst'].name}" in http


def test_cloud_24s_split_the_cloud_targets() -> None:
    """Some cloud targets in the blackholed /24s, some outside them, all in the cloud /20."""
    cloud = ipaddress.ip_network(world.CLOUD_PREFIX)
    blocked = [ipaddress.ip_network(net) for net in world.CLOUD_BLOCKED_24S]
    assert all(net.prefixlen == 24 and net.subnet_of(cloud) for net in blocked)
    inside = {
        key
        for key in world.CLOUD_TARGETS
        if any(ipaddress.ip_address(world.HOSTS[key].address) in net for net in blocked)
    }
    assert {"telegram-web", "telegram-dc"} <= inside
    assert set(world.CLOUD_TARGETS) - inside, "no cloud target left outside the blocked /24s"


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=list(SCENARIOS))
def test_scenario_nft_script_replaces_only_its_own_table(scenario: Scenario) -> None:
    script = scenario.nft_script()
    assert scenario.table.startswith("rpl_")
    tables = set(re.findall(r"table inet (\S+)", script))
    assert tables == {scenario.table}
    # Idempotent apply: create-if-absent, delete, then define.
    lines = script.splitlines()
    assert lines[0] == f"table inet {scenario.table}"
    assert lines[1] == f"delete table inet {scenario.table}"


def test_scenarios_touch_one_target_each() -> None:
    """Each scenario's rules name only its own host, so scenarios never see each other."""
    for name, scenario in SCENARIOS.items():
        if name in VANTAGE_WIDE:
            continue
        text = " ".join([*scenario.forward, *scenario.prerouting])
        text += " ".join(" ".join(spec) for spec in scenario.iptables)
        text += str(scenario.shape or "") + str(dict(scenario.dns_lies))
        tokens = set(re.findall(r"[\w.:-]+", text))
        named = {k for k, h in world.HOSTS.items() if {*h.addresses, h.name} & tokens}
        if name == "cloud-prefix":
            assert world.CLOUD_PREFIX in text
        elif name == "cloud-24s":
            assert named == set()
            assert all(prefix in text for prefix in world.CLOUD_BLOCKED_24S)
        elif name == "dns-blockpage":
            # One lie for an HTTP and an HTTPS target, to show what each makes of it.
            assert named == {"dns-blockpage", "dns-blockpage-tls"}
        elif name == "prefix-sample":
            assert named == set()
            assert all(prefix in text for prefix in world.SAMPLED_BLOCKED)
        elif name in ("sni", "http-rst", "residual"):
            # The address is shared with another name, but the rule matches the name only.
            assert len(named) == 1, (name, named)
        else:
            assert len(named) == 1, (name, named)


def test_sampled_prefix_is_apart_and_its_blocked_parts_are_disjoint() -> None:
    sampled = ipaddress.ip_network(world.SAMPLED_PREFIX)
    assert sampled.prefixlen == 16
    assert not sampled.overlaps(LAB_NET)
    assert not any(ipaddress.ip_address(h.address) in sampled for h in world.HOSTS.values())
    blocked = [ipaddress.ip_network(b) for b in world.SAMPLED_BLOCKED]
    assert all(b.subnet_of(sampled) for b in blocked)
    assert sum(b.num_addresses for b in blocked) == 5376
    assert not any(a.overlaps(b) for i, a in enumerate(blocked) for b in blocked[i + 1 :])
    edges = (sampled.network_address, sampled.broadcast_address)
    assert not any(edge in b for edge in edges for b in blocked)
    # The responder's port is no other lab server's.
    assert world.SAMPLED_PORT not in (53, 80, 443)
