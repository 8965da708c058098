"""Resolve webhook target hosts and refuse addresses a server must not call.

Link-local (169.254.0.0/16, fe80::/10, where cloud metadata services
live), multicast and unspecified (0.0.0.0, ::) addresses are refused, at
registration and again at every delivery, unless the target explicitly
allows them. Loopback and private addresses are allowed, since CI often
runs next to the server. Delivery connects to the very addresses checked
here, so a DNS answer that changes between check and connect cannot
redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class TargetURLError(ValueError):
    """A webhook URL that is malformed, does not resolve, or resolves to a refused address."""


@dataclass(frozen=True)
class ResolvedTarget:
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def unsafe_reason(address: str) -> str | None:
    """Return why an IP address is refused, or None when it may be called."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    return None


def parse_target(url: str) -> tuple[str, str, int, str]:
    """Split a webhook URL into scheme, host, port and request path."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetURLError(f"invalid URL {url!r}: must start with http:// or https://")
    if not parts.hostname:
        raise TargetURLError(f"invalid URL {url!r}: no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetURLError(f"invalid URL {url!r}: invalid port") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


def resolve_target(url: str, allow_unsafe: bool = False) -> ResolvedTarget:
    """Resolve the URL's host and check every address it resolves to.

    Raises TargetURLError when the URL is invalid, the host does not
    resolve, or (unless `allow_unsafe`) any address is refused.
    """
    scheme, host, port, path = parse_target(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise TargetURLError(f"could not resolve host {host!r} of {url!r}: {error.strerror}") from None
    addresses = tuple(dict.fromkeys(info[4][0] for info in infos))
    if not allow_unsafe:
        for address in addresses:
            reason = unsafe_reason(address)
            if reason:
                raise TargetURLError(
                    f"rejected URL {url!r}: host {host} resolves to the {reason} address {address}; "
                    "pass --allow-unsafe-address to allow it"
                )
    return ResolvedTarget(scheme, host, port, path, addresses)
