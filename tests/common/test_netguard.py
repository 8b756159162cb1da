"""mutate.common.netguard: which addresses and URLs webhooks may reach.

No test here resolves a name or opens a socket: resolvers are tables.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from mutate.common import netguard
from mutate.common.errors import InvalidArgument

OPEN = netguard.NetworkPolicy()
LOOPBACK = netguard.NetworkPolicy.from_strings(["127.0.0.0/8", "::1/128"])


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("224.0.0.251", "multicast"),
        ("ff05::2", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("fd12:3456::1", "private"),
        ("240.0.0.1", "reserved"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::a00:1", "private"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("2002:a9fe:a9fe::", "metadata"),
        ("2002:c0a8:101::1", "private"),
        ("::a00:1", "private"),
        ("2001::1", "private"),
    ],
)
def test_special_addresses_are_refused(address: str, kind: str) -> None:
    reason = netguard.refusal_reason(ipaddress.ip_address(address), OPEN)
    assert reason is not None
    assert kind in reason


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "2606:4700::1111",
        "64:ff9b::808:808",
        "2002:808:808::",
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert netguard.refusal_reason(ipaddress.ip_address(address), OPEN) is None


def test_allowed_networks_open_loopback_but_never_metadata() -> None:
    assert netguard.refusal_reason(ipaddress.ip_address("127.0.0.1"), LOOPBACK) is None
    assert netguard.refusal_reason(ipaddress.ip_address("::1"), LOOPBACK) is None
    assert netguard.refusal_reason(ipaddress.ip_address("10.0.0.1"), LOOPBACK)
    everything = netguard.NetworkPolicy.from_strings(["0.0.0.0/0", "::/0"])
    for metadata in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        assert netguard.refusal_reason(ipaddress.ip_address(metadata), everything)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("[::ffff:10.0.0.1]", "::ffff:10.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("3232235521", "192.168.0.1"),
    ],
)
def test_numeric_spellings_are_read_as_the_resolver_reads_them(
    host: str, address: str
) -> None:
    assert netguard.parse_literal(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "deadbeef", "1e100.net", "a.b.c.d"])
def test_names_are_not_literals(host: str) -> None:
    assert netguard.parse_literal(host) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "gopher://example.com/",
        "javascript:alert(1)",
        "http://user:pass@example.com/",
        "http:///nohost",
        "http://example.com:99999/",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(netguard.UrlRefused) as info:
        netguard.parse_url(url)
    assert isinstance(info.value, InvalidArgument)


def table(answers: dict[str, Sequence[str]]) -> netguard.Resolver:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise netguard.HostUnresolvable(host)
        return answers[host]

    return resolve


async def test_check_url_checks_every_answer() -> None:
    resolver = table(
        {"ok.example": ["93.184.216.34"], "bad.example": ["93.184.216.34", "10.0.0.8"]}
    )
    target = await netguard.check_url(
        "https://ok.example/hook", policy=OPEN, resolver=resolver
    )
    assert (target.host, target.port) == ("ok.example", 443)
    with pytest.raises(netguard.UrlRefused):
        await netguard.check_url("https://bad.example/", policy=OPEN, resolver=resolver)
    with pytest.raises(netguard.HostUnresolvable):
        await netguard.check_url(
            "https://none.example/", policy=OPEN, resolver=resolver
        )


async def test_literals_never_reach_the_resolver() -> None:
    async def resolver(host: str, port: int) -> Sequence[str]:
        raise AssertionError(f"asked for {host}")

    with pytest.raises(netguard.UrlRefused):
        await netguard.check_url("http://0x7f.1/", policy=OPEN, resolver=resolver)
    target = await netguard.check_url(
        "http://127.0.0.1:8080/", policy=LOOPBACK, resolver=resolver
    )
    assert target.literal == ipaddress.ip_address("127.0.0.1")


def test_bad_allowed_network_setting_fails() -> None:
    with pytest.raises(ValueError, match="does not appear"):
        netguard.NetworkPolicy.from_strings(["not-a-network"])
