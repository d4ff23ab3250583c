"""Where a run's callback may go: public http(s) addresses only, unless allow-listed.

A callback URL is the caller's, so it is hostile input: it must not make our workers reach
the platform's own services, the cloud metadata endpoint or anything else private. The API
refuses bad URLs and private IP literals at submission; the worker resolves the name when it
sends, refuses if *any* address is not allowed, and connects to the address it checked (a
name that resolves differently a second later cannot steer the request elsewhere).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.errors import InvalidInput

URL_MAX_LENGTH = 2048
FIELD = "callback_url"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackRefused(Exception):
    """The URL resolves to an address callbacks may not reach (or does not resolve)."""


@dataclass(frozen=True)
class CallbackTarget:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as given

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_callback_url(url: str, field: str = FIELD) -> CallbackTarget:
    """A well-formed http(s) URL, or `InvalidInput` naming `field`."""
    if len(url) > URL_MAX_LENGTH:
        raise InvalidInput(f"callback_url is longer than {URL_MAX_LENGTH} characters", field)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"callback_url is not a valid URL: {exc}", field) from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("callback_url must be an http:// or https:// URL", field)
    if not parts.hostname:
        raise InvalidInput("callback_url has no host", field)
    if parts.username or parts.password:
        raise InvalidInput("callback_url must not carry credentials", field)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    default_port = 443 if parts.scheme == "https" else 80
    return CallbackTarget(parts.scheme, parts.hostname, port or default_port, path)


def check_submitted_url(url: str, allowed_networks: list[str], field: str = FIELD) -> str:
    """What the API checks before storing a callback: syntax, and no private IP literal.
    Names are resolved by the worker at delivery (they may change, and DNS is slow)."""
    target = parse_callback_url(url, field)
    literal = _ip_literal(target.host)
    if literal is not None and not address_allowed(literal, allowed_networks):
        raise InvalidInput(
            f"callback_url points at a non-public address ({literal}); callbacks go to "
            "public addresses only",
            field,
        )
    if target.host.lower() in ("localhost", "localhost.localdomain") and not allowed_networks:
        raise InvalidInput("callback_url points at localhost; callbacks go to public "
                           "addresses only", field)
    return url.strip()


def address_allowed(address: IpAddress, allowed_networks: list[str]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for network in allowed_networks:
        if address in ipaddress.ip_network(network, strict=False):
            return True
    # `is_global` is False for private, loopback, link-local (metadata), CGNAT, reserved
    # and unspecified ranges; multicast is never a callback target either.
    return address.is_global and not address.is_multicast


def resolve_allowed(target: CallbackTarget, allowed_networks: list[str]) -> IpAddress:
    """The address to connect to; `CallbackRefused` if the name does not resolve or any of
    its addresses is not allowed (a name with one private address is not trusted at all)."""
    literal = _ip_literal(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise CallbackRefused(f"{target.host} does not resolve: {exc}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise CallbackRefused(f"{target.host} does not resolve")
    for address in addresses:
        if not address_allowed(address, allowed_networks):
            raise CallbackRefused(f"{target.host} resolves to a non-public address ({address})")
    return addresses[0]


def _ip_literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None
