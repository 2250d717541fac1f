"""Probe steps (dns, tcp, tls, http, quic): each takes a target and options and returns a typed
result.

This package knows nothing of Prometheus, the scheduler or the agent's config files.
"""

import dns._features

# The agent speaks no DNS over QUIC. With aioquic installed (for the QUIC step), dnspython
# would import it, and cryptography's TLS stack with it, as soon as its query modules load:
# about 70 ms and several MiB at every start of an agent that may have no `http3` target.
# `force` is dnspython's documented switch for its optional features.
dns._features.force("doq", False)
