"""TLS and basic auth for the metrics server, from a Prometheus exporter-toolkit web-config file.

Operators already write these files for node_exporter and friends, so `agent.web_config` takes
the same format (https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md):

    tls_server_config:
      cert_file: server.pem
      key_file: server-key.pem
      client_ca_file: clients-ca.pem      # optional
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12                  # optional
    basic_auth_users:
      prometheus: $2y$10$...              # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':')

Relative paths are relative to the web-config file, as in the toolkit. The basic auth checks
themselves are agent/webauth.py's.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.agent_section import AgentSection
from agent.config.loader import ConfigError, read_yaml, validate
from agent.config.types import Strict

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
# Python's ssl module verifies every client certificate it asks for (there is no "ask but do
# not verify"), so the toolkit's two non-verifying types are served as their verifying
# counterparts: stricter, never looser, and they need client_ca_file like those.
_VERIFY_MODE: dict[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_BCRYPT = re.compile(r"\$2[aby]\$(?P<cost>0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}")
MAX_COST = 16


class TlsServerConfig(Strict):
    """`tls_server_config`: the server certificate and who may connect."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: ClientAuthType = "NoClientCert"
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"

    @model_validator(mode="after")
    def _client_auth(self) -> TlsServerConfig:
        if self.client_auth_type == "NoClientCert" and self.client_ca_file is not None:
            # The toolkit refuses this too: a CA file that verifies nobody is a mistake.
            raise ValueError(
                "client_ca_file is set but client_auth_type is NoClientCert: "
                "set client_auth_type (e.g. RequireAndVerifyClientCert)"
            )
        if self.client_auth_type != "NoClientCert" and self.client_ca_file is None:
            raise ValueError(
                f"client_auth_type {self.client_auth_type} needs client_ca_file "
                "(the CA that client certificates must chain to)"
            )
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version")
        return self


class WebConfig(Strict):
    """A whole web-config file: TLS, basic auth users, or both."""

    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[Annotated[str, Field(min_length=1)], str] = {}

    @field_validator("basic_auth_users")
    @classmethod
    def _hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for user, hashed in value.items():
            if ":" in user:
                raise ValueError(f"user {user!r}: a basic auth user name cannot contain ':'")
            match = _BCRYPT.fullmatch(hashed)
            if match is None:
                raise ValueError(
                    f"user {user!r}: the password is not a bcrypt hash ($2a$, $2b$ or $2y$); "
                    "make one with `htpasswd -nBC 10 USER`"
                )
            if int(match["cost"]) > MAX_COST:
                # Each uncached check would hold the (single) checker for minutes or more.
                raise ValueError(
                    f"user {user!r}: bcrypt cost {match['cost']} is too slow to check "
                    f"(at most {MAX_COST}; 10 to 12 is usual)"
                )
        return value

    @property
    def secures(self) -> bool:
        """Whether this file adds TLS or authentication (an empty one adds nothing)."""
        return self.tls_server_config is not None or bool(self.basic_auth_users)


def _resolve(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else base / path


def load_web_config(path: Path) -> WebConfig:
    """Read and validate a web-config file; raises ConfigError naming the file and the key.

    The files it names (certificate, key, client CA) are checked to be readable and to load
    into a TLS context, so that a mistake shows at start (or in `reachprobe validate`).
    """
    source = str(path)
    empty = "a web config needs tls_server_config and/or basic_auth_users"
    config = validate(WebConfig, read_yaml(path, empty), source, "a mapping")
    tls = config.tls_server_config
    if tls is not None:
        base = path.parent
        tls = tls.model_copy(
            update={
                "cert_file": _resolve(tls.cert_file, base),
                "key_file": _resolve(tls.key_file, base),
                "client_ca_file": tls.client_ca_file and _resolve(tls.client_ca_file, base),
            }
        )
        config = config.model_copy(update={"tls_server_config": tls})
        ssl_context(config, source)
    return config


def ssl_context(config: WebConfig, source: str = "web config") -> ssl.SSLContext | None:
    """The server TLS context of `config` (None without tls_server_config); raises ConfigError."""
    tls = config.tls_server_config
    if tls is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
    key = "tls_server_config"
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        why = f"cannot load {tls.cert_file} / {tls.key_file}: {_ssl_reason(exc)}"
        raise ConfigError(source, [(f"{key}.cert_file", why)]) from None
    if tls.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            why = f"cannot load {tls.client_ca_file}: {_ssl_reason(exc)}"
            raise ConfigError(source, [(f"{key}.client_ca_file", why)]) from None
    ctx.verify_mode = _VERIFY_MODE[tls.client_auth_type]
    return ctx


def _ssl_reason(exc: OSError | ssl.SSLError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or exc)


def listen_policy(agent: AgentSection, source: str) -> WebConfig | None:
    """The web config to serve with, after checking that `agent.listen` may be served.

    Beyond loopback the metrics tell anyone who can reach them what this vantage measures, so
    a non-loopback `listen` needs a web config that adds TLS or basic auth, or the explicit
    `insecure_listen: true`. Raises ConfigError (exit 2) saying how to fix it.
    """
    web = load_web_config(agent.web_config) if agent.web_config is not None else None
    address = agent.listen_address
    if address is None or ipaddress.ip_address(address[0]).is_loopback:
        return web
    if (web is None or not web.secures) and not agent.insecure_listen:
        why = (
            f"{agent.listen} is beyond loopback and would serve the metrics to anyone who can "
            "reach it: set agent.web_config to an exporter-toolkit web config with "
            "tls_server_config and/or basic_auth_users, listen on 127.0.0.1, or (on a network "
            "you trust) set agent.insecure_listen: true; see docs/security.md"
        )
        raise ConfigError(source, [("agent.listen", why)])
    return web
