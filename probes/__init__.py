"""Probe steps (dns, tcp, tls, http, quic): each takes a target and options and returns a typed
result.

This package knows nothing of Prometheus, the scheduler or the agent's config files.
"""

# Imported by name: a bare `import dns._features` would bind `dns` here, shadowing probes.dns.
from dns._features import force as _force_dns_feature

# The agent speaks no DNS over QUIC. With aioquic installed (for the QUIC step), dnspython
# would import it, and cryptography's TLS stack with it, as soon as its query modules load:
# about 70 ms and several MiB at every start of an agent that may have no `http3` target.
# `force` is dnspython's documented switch for its optional features.
_force_dns_feature("doq", False)
