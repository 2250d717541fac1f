"""`check` and `validate` load only what they use: the server, prometheus_client,
remote-write (protobuf, cramjam), bcrypt, the simulated world, aiohttp (DoH only) and aioquic
(`http3` targets only) load in the commands and steps that need them (docs/performance.md
has the start-up figures)."""

from __future__ import annotations

import subprocess
import sys

RUN_ONLY = ("aiohttp", "prometheus_client", "google.protobuf", "cramjam", "bcrypt", "simlab",
            "trustme", "agent.server", "agent.scheduler", "aioquic")  # fmt: skip


def test_check_and_validate_do_not_import_what_only_run_or_doh_needs() -> None:
    # What `check` imports up to its first cycle: the CLI, the planner, the prober and cycle.
    code = (
        "import sys, agent.cli, agent.planner, measure.cycle, measure.prober\n"
        f"print(sorted(m for m in {RUN_ONLY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
