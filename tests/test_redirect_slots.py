"""Issue 22: an HTTP step holds a slot of `agent.concurrency`, and a cross-host redirect's
host must still resolve: no slot is waited for while a slot is held, so N redirecting targets
at `concurrency: N` (or 1) are all reachable instead of all `http_timeout`."""

from __future__ import annotations

import pytest

from simlab import Zone, start_dns, start_web
from tests.test_hostile_networks import cycle, verdicts

HOST = "127.0.0.1"
TARGETS = 8


@pytest.mark.parametrize("concurrency", [TARGETS, 1])
async def test_redirecting_targets_do_not_starve_their_own_redirect_lookup(
    servers,
    concurrency: int,
) -> None:
    final = await servers(start_web, "valid", HOST)
    moved = f"http://www.site.test:{final.port}/"
    # The 302 is held back so that every target's HTTP step holds its slot at once.
    hop = await servers(start_web, "redirect", HOST, location=moved, delay=0.3)
    names = [f"site{i}.test" for i in range(TARGETS)]
    zone = Zone({**{n: [HOST] for n in names}, "www.site.test": [HOST]})
    dns_server = await servers(start_dns, zone)
    targets = [{"name": n, "url": f"http://{n}:{hop.port}/"} for n in names]
    result = await cycle(targets, dns_server.port, concurrency=concurrency)
    assert set(verdicts(result).values()) == {"reachable"}
    for report in result.reports:
        http = report.chains[0][-1]
        assert http.facts.redirects == (moved,)
