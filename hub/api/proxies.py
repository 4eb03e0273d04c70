"""Which peer may say how the browser reached us: the proxies of ``HUB_TRUSTED_PROXIES``.

Behind a proxy that terminates TLS the hub sees plain http, so by itself it cannot tell
whether a cookie may be marked ``Secure``. The proxy says so with ``X-Forwarded-Proto:
https`` or ``Forwarded: proto=https``, but any client can send those headers too: they are
believed only when the direct peer (the socket's address, never a forwarded one) is in the
trusted list; anyone else's are ignored. ``hub api`` turns uvicorn's own forwarded-header
handling off, so this is the one rule that decides. A request served over TLS directly is
https whatever its headers.

When a trusted peer sends both headers, either saying https is enough: marking a cookie
``Secure`` over http only costs a login that does not stick, the other mistake would send a
session over the network in clear.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrustedProxies:
    """The networks whose forwarded headers are believed (none by default)."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[str]) -> TrustedProxies:
        """From ``ApiSettings.trusted_proxies`` (validated there: IPs or CIDRs)."""
        return cls(tuple(ipaddress.ip_network(e, strict=False) for e in entries))

    def trusts(self, address: str | None) -> bool:
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:  # a unix socket's peer, a test client's name
            return False
        mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is 10.0.0.1
        return any(ip in net or (mapped is not None and mapped in net)
                   for net in self.networks)

    def _trusted(self, request: Request) -> bool:
        return self.trusts(request.client.host if request.client else None)

    def is_https(self, request: Request) -> bool:
        """Whether the browser's connection is TLS: ours, or a trusted proxy's word."""
        if request.url.scheme == "https":
            return True
        if not self._trusted(request):
            return False
        return _last(request.headers.get("x-forwarded-proto")) == "https" or \
            _forwarded_proto(request.headers.get("forwarded")) == "https"

    def client_address(self, request: Request) -> str | None:
        """The browser's address for the audit: the peer's, or the one a trusted proxy
        appended to ``X-Forwarded-For`` (the rightmost: earlier entries are the client's
        own say)."""
        peer = request.client.host if request.client else None
        if self._trusted(request):
            forwarded = _last(request.headers.get("x-forwarded-for"))
            if forwarded:
                return forwarded[:100]
        return peer


def _last(value: str | None) -> str:
    """The entry the nearest proxy wrote: the last of a comma-separated list."""
    return value.rsplit(",", 1)[-1].strip().lower() if value else ""


def _forwarded_proto(value: str | None) -> str:
    """``proto`` of the last element of an RFC 7239 ``Forwarded`` header."""
    for pair in _last(value).split(";"):
        name, _, given = pair.partition("=")
        if name.strip() == "proto":
            return given.strip().strip('"')
    return ""
