"""Whether this process may open raw sockets (CAP_NET_RAW), asked once and logged once."""

from __future__ import annotations

import functools
import logging
import socket

log = logging.getLogger(__name__)

SKIPPED_NO_CAP = "skipped: no CAP_NET_RAW"


@functools.cache
def has_cap_net_raw() -> bool:
    """True if a raw ICMP socket can be opened; without it, logs one line saying what to do.

    Opening a socket is the real test: it also answers correctly inside user namespaces and
    containers, where the capability sets in /proc may say more than the kernel allows.
    """
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except PermissionError:
        log.warning(
            "raw probes skipped: no CAP_NET_RAW (give it with --cap-add NET_RAW or "
            "AmbientCapabilities=CAP_NET_RAW, see docs/raw.md); the other probes run normally"
        )
        return False
    return True
