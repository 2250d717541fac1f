"""The value types every config section shares: the strict base, durations, names, networks,
host:port text and files relative to the config file."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

from agent.durations import parse_duration

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


class Strict(BaseModel):
    """The base of every config model: unknown keys are errors and a loaded config is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _label(value: object) -> object:
    # Label values must stay bounded and safe to print: no spaces, URLs or free text.
    if isinstance(value, str) and not _LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-128 letters, digits, '_', '.', ':' or '-'"
        )
    return value


def _network(value: object) -> object:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        # pydantic would otherwise read the number 1 as the network 0.0.0.1/32.
        raise ValueError(f'{value!r} is not a network in CIDR form (e.g. "198.18.0.0/15")')
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a network in CIDR form: {exc}") from None


def greater_than_zero(value: float) -> float:
    """`value` unchanged; a ValueError unless it is above zero."""
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(greater_than_zero)
]
LabelName = Annotated[str, BeforeValidator(_label)]
Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]

_COUNTRY = re.compile(r"([A-Z]{2})?")
_ASN = re.compile(r"(?:AS)?(\d{1,10})", re.IGNORECASE)
_GROUP = re.compile(r"[A-Za-z0-9_.:-]*")


def _country(value: object) -> object:
    if isinstance(value, str) and not _COUNTRY.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a country code: use two capital letters (ISO 3166-1, e.g. RU) "
            "or leave it empty"
        )
    return value


def _asn(value: object) -> object:
    # YAML reads `asn: 12389` as a number; the number alone is as clear as AS12389.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and value:
        match = _ASN.fullmatch(value)
        if match is None:
            raise ValueError(f"{value!r} is not an AS number: write it as AS12389 (or 12389)")
        return f"AS{match[1]}"
    return value


def _group_name(min_length: int) -> Any:
    """A group label type: up to 64 letters, digits, '_', '.', ':' or '-', at least `min_length`."""

    size = f"{min_length}-64" if min_length else "up to 64"

    def check(value: object) -> object:
        if isinstance(value, str) and not (
            min_length <= len(value) <= 64 and _GROUP.fullmatch(value)
        ):
            raise ValueError(
                f"{value!r} is not a valid group name: use {size} letters, digits, "
                "'_', '.', ':' or '-'"
            )
        return value

    return Annotated[str, BeforeValidator(check)]


CountryCode = Annotated[str, BeforeValidator(_country)]
AsNumber = Annotated[str, BeforeValidator(_asn)]
GroupName = _group_name(0)
RequiredGroupName = _group_name(1)


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Parse `ip`, `ip:port`, `[v6]:port` or `host:port` into (host, port)."""
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: missing ']' after an IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':port' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r}: a port is required (host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port must be a number from 0 to 65535")
    if not host:
        raise ValueError(f"{text!r}: the host is empty")
    return host, int(port_text)


def check_ip(text: str) -> str:
    """`text` as a normalised IP address; a ValueError naming it otherwise."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def relative_to_config(value: Path, info: ValidationInfo) -> Path:
    """`value` resolved against the config file's folder (the loader passes it as context)."""
    base = (info.context or {}).get("base_dir")
    return value if value.is_absolute() or base is None else Path(base) / value


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    """`value` resolved against the config file's folder; an error if no such file exists."""
    path = relative_to_config(value, info)
    if not path.is_file():
        raise ValueError(f"file {str(path)!r} does not exist")
    return path


ExistingFile = Annotated[Path, AfterValidator(_existing_file)]


def check_regex(value: str | bytes) -> None:
    """A ValueError with re's reason unless `value` compiles."""
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None


def _regex(value: str) -> str:
    check_regex(value)
    return value


def _bytes_regex(value: str) -> str:
    # Matched against bytes (a reply), so compiled as a bytes pattern.
    check_regex(value.encode())
    return value


def _ip_port(value: str) -> str:
    check_ip(split_host_port(value)[0])
    return value


Regex = Annotated[str, AfterValidator(_regex)]
BytesRegex = Annotated[str, AfterValidator(_bytes_regex)]
# `ip:port` or `[v6]:port`: an address, never a name (nothing to resolve, nothing to leak).
IpPort = Annotated[str, AfterValidator(_ip_port)]
