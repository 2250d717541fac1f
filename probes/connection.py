"""One address's connection as the steps build it up: `tcp` opens the socket, `tls` runs the
handshake on it. Its owner (the measurement layer) closes it, whatever the steps concluded."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from probes.results import format_endpoint


@dataclass(slots=True)
class Connection:
    """The socket and TLS state shared by the steps run against one address."""

    address: str
    port: int
    sock: socket.socket | None = None
    tls: ssl.SSLObject | None = None

    @property
    def endpoint(self) -> str:
        return format_endpoint(self.address, self.port)

    def close(self) -> None:
        """Close the socket (a TLS session over a MemoryBIO needs no closing of its own)."""
        if self.sock is not None:
            self.sock.close()
