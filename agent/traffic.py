"""What a config makes the agent send where, in words: derived from the probe plan, never
from running it. docs/volunteers.md's "What the agent sends where" list is this module's
output for the shipped config (`python -m agent.traffic`, tests/test_traffic.py compares), so a
kind of traffic the config gains and this module has no words for fails the test (`Step`s
without words raise, and so do plan fields nobody has looked at).
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from collections.abc import Sequence
from pathlib import Path

from agent.config import Config, load_config
from agent.planner import make_plan
from measure.followups.sni import CONTROL_SNI
from measure.plan import ProbePlan, TargetPlan
from probes.http import MAX_REDIRECTS
from probes.taxonomy import Step

# What each step sends to a target's address.
STEP_WORDS: dict[Step, str] = {
    Step.TCP: "a TCP connection",
    Step.TLS: "a TLS handshake naming the site (SNI)",
    Step.HTTP: (
        "an ordinary `GET` that looks like a browser's (a common browser User-Agent, no "
        "`reachprobe` anywhere on the wire)"
    ),
}
EXCHANGE_WORDS: dict[str, str] = {
    "mtproto": (
        "MTProto's `req_pq_multi`, the first message a Telegram app sends (not browser-like: "
        "an observer sees a Telegram client starting up)"
    ),
    "bytes": "the bytes the config lists for it (`exchange.send`)",
}
RESOLVER_WORDS: dict[str, str] = {
    "system": "the resolver this machine uses",
    "udp": "DNS over UDP to {servers}",
    "tcp": "DNS over TCP to {servers}",
    "dot": "DNS over TLS to {servers}",
    "doh": "DNS over HTTPS to {url}",
}
# The plan's fields this list accounts for: traffic ones are described below, the others
# change how often or how long, never what or where. A new field fails the test until it is
# sorted into one of the two.
DESCRIBED = frozenset(
    {"targets", "test_resolver", "control_resolver", "vantage", "prefixes", "raw"}
)
NOT_TRAFFIC = frozenset(
    {
        "timeout", "concurrency", "max_addresses", "address_limit", "max_body_bytes",
        "injection_window", "bogon_exempt", "ca_file", "fingerprints", "dns_fingerprints",
        "jitter",
        "prefix_seed", "prefix_syn_rate", "interval",
    }
)  # fmt: skip


def _resolver(plan_resolver: object) -> str:
    kind = str(getattr(plan_resolver, "type", ""))
    servers = ", ".join(f"{h}:{p}" for h, p in getattr(plan_resolver, "servers", ()))
    return RESOLVER_WORDS[kind].format(servers=servers, url=getattr(plan_resolver, "url", ""))


def _names(targets: Sequence[TargetPlan]) -> str:
    return ", ".join(dict.fromkeys(t.host for t in targets))


def _chain(target: TargetPlan) -> str:
    """What one target's steps send, in order."""
    words = []
    for step in target.steps:
        kind = target.exchange.kind if step == Step.EXCHANGE and target.exchange else None
        said = EXCHANGE_WORDS.get(kind) if kind else STEP_WORDS.get(step)
        if said is None:
            raise ValueError(f"no words in agent/traffic.py for {kind or step.value} traffic")
        words.append(said)
    return ", then ".join(words)


def traffic(config: Config, plan: ProbePlan) -> list[str]:
    """The list, one Markdown bullet per kind of traffic, for `config` and its `plan`."""
    unknown = {f.name for f in dataclasses.fields(plan)} - DESCRIBED - NOT_TRAFFIC
    if unknown:
        raise ValueError(f"plan fields with no words in agent/traffic.py: {sorted(unknown)}")
    every = f"every `interval` ({config.agent.interval:g} s)"
    named = [t for t in plan.targets if not t.is_address]
    out = []
    if named:
        out.append(
            f"**To {_resolver(plan.test_resolver)}** (`resolvers.test`): DNS queries (A and "
            f"AAAA) for the {len(named)} target names, {every}: {_names(named)}."
        )
    if plan.control_resolver is not None and named:
        out.append(
            f"**To the control resolver**, {_resolver(plan.control_resolver)} "
            "(`resolvers.control`): the same names, to compare with what your resolver says."
        )
    if plan.vantage.nxdomain_suffix:
        out.append(
            f"**To {_resolver(plan.test_resolver)}, once a cycle**: a lookup of a random name "
            f"under {plan.vantage.nxdomain_suffix} (`rp-` and 20 random hex digits), which "
            "cannot exist: an address back means the resolver rewrites NXDOMAIN."
        )
    if plan.vantage.tcp_canary:
        host, port = plan.vantage.tcp_canary
        out.append(
            f"**To {host}:{port}, once a cycle**: a TCP connection attempt "
            "(`vantage.tcp_canary`). Nothing should answer there: if it connects, a middlebox "
            "on your network answers every connection."
        )
    by_chain: dict[str, list[TargetPlan]] = {}
    for target in plan.targets:
        by_chain.setdefault(_chain(target), []).append(target)
    for chain, targets in by_chain.items():
        where = ", ".join(f"{t.host}:{t.port}" for t in targets)
        many = f"{len(targets)} targets" if len(targets) > 1 else "1 target"
        out.append(f"**To {many}** ({where}), {every}: {chain}.")
    if any(t.uses_tls for t in plan.targets):
        out.append(
            "**To the same address, when a TLS handshake is reset, times out or is cut**: the "
            f"handshake repeated naming {CONTROL_SNI} instead, to tell whether the name made "
            "the difference. Any failure that packet loss could explain is repeated once."
        )
    web = [t for t in plan.targets if t.http is not None]
    if web:
        out.append(
            f"**To other hosts, when a page redirects there** (up to {MAX_REDIRECTS} hops): "
            "their names through your resolver, and the same connection, handshake and `GET`."
        )
    if web and plan.control_resolver is not None:
        out.append(
            "**To an address the control resolver gave**, when your resolver's answer shares "
            "no address with it and no certificate vouches for it: the same `GET` there, to "
            "compare the pages."
        )
    if plan.prefixes:
        sampled = ", ".join(f"{p.cidr} port {p.port}" for p in plan.prefixes)
        out.append(
            f"**To sampled addresses of the configured prefixes** ({sampled}), "
            f"{every}: TCP connections (docs/prefixes.md)."
        )
    if plan.raw is not None:
        out.append(
            "**Raw packets** (`raw.enabled`): TTL-limited copies of the probes toward each "
            "target that failed, and repeated packets that look like a measurement tool "
            "(docs/raw.md)."
        )
    else:
        out.append("**No raw packets**: `raw.enabled` is off.")
    if config.remote_write is not None:
        out.append(f"**To {config.remote_write.url}**: the metrics, every cycle (remote-write).")
    return [textwrap.fill(f"- {line}", 100, subsequent_indent="  ") for line in out]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the list for a config (default: the built-in one)."""
    parser = argparse.ArgumentParser(prog="python -m agent.traffic", description=__doc__)
    parser.add_argument("--config", "-c", type=Path, help="YAML config (default: built-in)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    print("\n".join(traffic(config, make_plan(config))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
