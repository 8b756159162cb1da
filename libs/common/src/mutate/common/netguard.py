"""Which webhook URLs may be called: the private-address check.

Used twice: by the gateway when a URL is saved (`check_url`) and by the
notifier when it connects (`resolve_checked`, from inside its network backend,
so the connection goes to the very address that was checked and a DNS answer
that changes between check and connect cannot slip through).

Refused: any scheme but `http`/`https`; user info in the URL; hosts that are,
or resolve to, loopback, private, link-local, carrier-grade NAT, multicast,
unspecified, reserved or documentation addresses, including the IPv4-mapped,
IPv4-compatible, NAT64 (64:ff9b::/96) and 6to4 forms of such addresses, and
cloud metadata addresses. Numeric host spellings that the C resolver accepts
(`2130706433`, `0x7f.1`, `0177.0.0.1`) are read the way it reads them, so
they are judged as the address they really are. Networks listed in the
allow-list (WEBHOOK_ALLOWED_NETWORKS; loopback for the local platform and the
tests) are accepted; metadata addresses never are.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence

from mutate.common.errors import InvalidArgument, Unavailable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""`(host, port) -> addresses as strings`; injectable so tests do no DNS."""

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Instance metadata services: AWS/GCP/Azure/OpenStack (169.254.169.254), AWS
# ECS task metadata and the AWS DNS resolver, Alibaba, Oracle, and the IPv6
# forms of AWS and GCP. Refused even when an allowed network covers them.
METADATA_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",
        "169.254.169.253/32",
        "169.254.170.2/32",
        "169.254.170.23/32",
        "100.100.100.200/32",
        "192.0.0.192/32",
        "fd00:ec2::254/128",
        "fd00:ec2::23/128",
        "fd20:ce::254/128",
    )
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# Carrier-grade NAT space; not `is_private` in Python, so named here.
_SHARED = ipaddress.ip_network("100.64.0.0/10")
# What the C resolver's inet_aton reads as an IPv4 address.
_NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")


class UrlRefused(InvalidArgument):
    """The URL, or an address its host resolves to, may not be called."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message, reason="WEBHOOK_URL_REFUSED")
        self.url = url


class HostUnresolvable(Unavailable):
    """The host has no address right now (DNS failure); may work later."""


@dataclasses.dataclass(frozen=True)
class NetworkPolicy:
    """Which otherwise refused networks are allowed (never metadata)."""

    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_strings(cls, networks: Iterable[str]) -> NetworkPolicy:
        """Parse CIDRs such as `127.0.0.0/8`, `::1/128`; ValueError if bad."""
        parsed = []
        for text in networks:
            text = text.strip()
            if text:
                parsed.append(ipaddress.ip_network(text, strict=False))
        return cls(allowed_networks=tuple(parsed))

    def is_allowed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allowed_networks)


@dataclasses.dataclass(frozen=True)
class Target:
    """A webhook URL taken apart: what to connect to and what to ask for."""

    url: str
    scheme: str
    host: str
    port: int
    # Set when the host is an address literal (in any spelling).
    literal: IPAddress | None


def parse_url(url: str) -> Target:
    """Check the URL's form; raise UrlRefused when it cannot be a webhook."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"not a valid URL: {exc}", url=url) from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UrlRefused("only http and https URLs are allowed", url=url)
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("URLs with user info are not allowed", url=url)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused("the URL has no host", url=url)
    if port is None:
        port = 443 if scheme == "https" else 80
    return Target(url, scheme, host, port, parse_literal(host))


def parse_literal(host: str) -> IPAddress | None:
    """The address a host names literally, in any spelling; None for names."""
    text = host.strip("[]")
    # A zone id (fe80::1%eth0) does not change which address it is.
    text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(text):
        # inet_aton reads decimal, octal and hex parts, and 1-4 of them, as
        # every libc resolver does; it parses only, no lookup.
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def refusal_reason(address: IPAddress, policy: NetworkPolicy) -> str | None:
    """Why `address` may not be called, or None when it may."""
    if any(address in network for network in METADATA_NETWORKS):
        return f"{address} is a cloud metadata address"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        if any(embedded in network for network in METADATA_NETWORKS):
            return f"{address} embeds the metadata address {embedded}"
        if policy.is_allowed(address) or policy.is_allowed(embedded):
            return None
        reason = _special_use(embedded)
        return f"{address} embeds {embedded}, {reason}" if reason else None
    if policy.is_allowed(address):
        return None
    reason = _special_use(address)
    return f"{address} is {reason}" if reason else None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form stands for (mapped, NAT64, 6to4...)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _special_use(address: IPAddress) -> str | None:
    """A name for the kind of non-public address, or None when public."""
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("carrier-grade NAT", address in _SHARED),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("site-local", getattr(address, "is_site_local", False)),
        ("not globally routable", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"a {name} address"
    return None


def check_address(address: IPAddress, policy: NetworkPolicy, *, url: str = "") -> None:
    """Raise UrlRefused when `address` may not be called."""
    reason = refusal_reason(address, policy)
    if reason is not None:
        raise UrlRefused(f"webhook address refused: {reason}", url=url)


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), off the event loop."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except socket.gaierror as exc:
        raise HostUnresolvable(f"cannot resolve {host!r}: {exc}") from exc
    return [str(info[4][0]) for info in infos]


async def resolve_checked(
    host: str,
    port: int,
    *,
    policy: NetworkPolicy,
    resolver: Resolver = system_resolver,
    url: str = "",
) -> list[IPAddress]:
    """Every address of `host`, each checked; refuse if any is refused.

    One refused address refuses the host: a name that answers with a mix of
    public and private addresses is an attack or a mistake either way.
    """
    literal = parse_literal(host)
    if literal is not None:
        check_address(literal, policy, url=url)
        return [literal]
    answers = await resolver(host, port)
    addresses: list[IPAddress] = []
    for answer in answers:
        address = parse_literal(str(answer))
        if address is None:
            raise HostUnresolvable(f"resolver gave a non-address {answer!r}")
        check_address(address, policy, url=url)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise HostUnresolvable(f"{host!r} has no address")
    return addresses


async def check_url(
    url: str,
    *,
    policy: NetworkPolicy,
    resolver: Resolver = system_resolver,
) -> Target:
    """Check a URL when it is saved: its form, then every address it has.

    Raises UrlRefused (INVALID_ARGUMENT) or HostUnresolvable (UNAVAILABLE).
    The check is repeated when connecting; this one gives the user an early,
    clear answer.
    """
    target = parse_url(url)
    await resolve_checked(
        target.host, target.port, policy=policy, resolver=resolver, url=url
    )
    return target


__all__ = [
    "ALLOWED_SCHEMES",
    "METADATA_NETWORKS",
    "HostUnresolvable",
    "IPAddress",
    "IPNetwork",
    "NetworkPolicy",
    "Resolver",
    "Target",
    "UrlRefused",
    "check_address",
    "check_url",
    "parse_literal",
    "parse_url",
    "refusal_reason",
    "resolve_checked",
    "system_resolver",
]
