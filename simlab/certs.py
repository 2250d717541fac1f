"""Test PKI on trustme: a CA the agent trusts, one it does not, and leaf certificates."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

import trustme


def load_or_create_ca(cert_path: Path, key_path: Path) -> trustme.CA:
    """The CA stored at `cert_path`/`key_path`, created and written there if absent.

    Reusing the files lets several lab processes issue certificates under one trust anchor.
    """
    if cert_path.exists() and key_path.exists():
        return trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
    ca = trustme.CA(organization_name="reachprobe test CA")
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(str(cert_path))
    ca.private_key_pem.write_to_path(str(key_path))
    return ca


def write_leaf(leaf: trustme.LeafCert, cert_path: Path, key_path: Path) -> None:
    """Write a leaf's chain (leaf first) and its private key as PEM files."""
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_path))


def server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    """A server-side TLS context presenting `leaf`."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    return ctx


def server_context_from_files(cert_path: str | Path, key_path: str | Path) -> ssl.SSLContext:
    """A server-side TLS context from PEM files (the CLI's `--cert`/`--key`)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A verifying client context that trusts only `ca`."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


@dataclass
class Pki:
    """A trusted and an untrusted CA in `directory`, with `ca_file` the agent's `tls.ca_file`."""

    directory: Path
    trusted: trustme.CA = field(init=False)
    untrusted: trustme.CA = field(init=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.trusted = load_or_create_ca(self.directory / "ca.pem", self.directory / "ca-key.pem")
        self.untrusted = load_or_create_ca(
            self.directory / "untrusted-ca.pem", self.directory / "untrusted-ca-key.pem"
        )

    @property
    def ca_file(self) -> Path:
        """The trusted CA bundle (PEM)."""
        return self.directory / "ca.pem"

    def issue(self, *identities: str, trusted: bool = True) -> trustme.LeafCert:
        """A leaf certificate for DNS names and/or IP literals."""
        return (self.trusted if trusted else self.untrusted).issue_cert(*identities)

    def issue_files(self, stem: str, *identities: str, trusted: bool = True) -> tuple[Path, Path]:
        """Issue a leaf and write it as `<stem>.pem` and `<stem>-key.pem`; return both paths."""
        cert_path = self.directory / f"{stem}.pem"
        key_path = self.directory / f"{stem}-key.pem"
        write_leaf(self.issue(*identities, trusted=trusted), cert_path, key_path)
        return cert_path, key_path
