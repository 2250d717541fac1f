"""What the agent looks like on the wire: an ordinary browser's request, and the innocuous
name its controls carry. The HTTP step and the raw probes' HTTP trigger both send exactly
these headers, so a trigger that a censor reacts to is byte for byte the request the agent
measured (README: Risks)."""

from __future__ import annotations

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
HEADERS: tuple[tuple[str, str], ...] = (
    ("User-Agent", USER_AGENT),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Accept-Encoding", "gzip, deflate"),
)
# A name no censor targets: the SNI of the SNI re-check and the raw traces' control, and the
# Host of their HTTP control. Its certificate will not match the target's address, so only
# "got through or not" is read from a probe that carries it.
CONTROL_NAME = "www.example.org"


def request_headers(authority: str) -> list[tuple[str, str]]:
    """The headers of a GET for `authority` (host, or host:port), in the order sent."""
    return [("Host", authority), *HEADERS, ("Connection", "close")]
