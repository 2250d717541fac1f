"""Probe steps (dns, tcp, tls, http): each takes a target and options and returns a typed result.

This package knows nothing of Prometheus, the scheduler or the agent's config files.
"""
