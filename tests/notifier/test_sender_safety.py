"""The private-address refusal, through the production sender.

Only the network is replaced: the resolver by a table (no DNS) and the
socket layer by a backend that records where it was asked to connect and
raises, so no test here can open a socket or send a packet anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import httpcore
import pytest

from mutate.common import netguard, webhooks
from mutate.notifier._http import GuardedBackend, Verdict, WebhookSender


class NoSocketBackend(httpcore.AsyncNetworkBackend):
    """Records connection targets and refuses to open any socket."""

    def __init__(self) -> None:
        self.targets: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.targets.append((host, port))
        raise httpcore.ConnectError("sockets are disabled in this test")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise AssertionError("no unix sockets either")

    async def sleep(self, seconds: float) -> None:
        pass


class TableResolver:
    """Answers from a table, one answer list per call in turn."""

    def __init__(self, answers: dict[str, list[Sequence[str]]]) -> None:
        self._answers = {host: list(seq) for host, seq in answers.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        queue = self._answers.get(host)
        if not queue:
            raise netguard.HostUnresolvable(f"{host} unknown to the table")
        return queue.pop(0) if len(queue) > 1 else queue[0]


def sender(
    resolver: TableResolver,
    backend: NoSocketBackend,
    allowed: Sequence[str] = (),
) -> WebhookSender:
    return WebhookSender(
        policy=netguard.NetworkPolicy.from_strings(allowed),
        timeout=2.0,
        excerpt_bytes=64,
        resolver=resolver,
        network_backend=backend,
    )


HEADERS = webhooks.sign([b"k" * 32], "msg_1", b"{}")

REFUSED_LITERALS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://100.64.0.1/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a00:1::1]/",
    "http://[::7f00:1]/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://127.0.0.1:8080/hook",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://255.255.255.255/",
    "http://192.0.2.1/",
    "https://[2001:db8::1]/",
]


@pytest.mark.parametrize("url", REFUSED_LITERALS)
async def test_literal_private_addresses_are_refused(url: str) -> None:
    resolver, backend = TableResolver({}), NoSocketBackend()
    webhook = sender(resolver, backend)
    try:
        result = await webhook.send(url, headers=HEADERS, body=b"{}")
    finally:
        await webhook.aclose()
    assert result.verdict is Verdict.STOP
    assert "refused" in result.error
    assert backend.targets == []
    assert resolver.asked == []


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "file:///etc/passwd", "http://user:pw@example.com/"]
)
async def test_other_schemes_and_user_info_are_refused(url: str) -> None:
    resolver, backend = TableResolver({}), NoSocketBackend()
    webhook = sender(resolver, backend)
    try:
        result = await webhook.send(url, headers=HEADERS, body=b"{}")
    finally:
        await webhook.aclose()
    assert result.verdict is Verdict.STOP
    assert backend.targets == [] and resolver.asked == []


async def test_public_then_private_answer_never_reaches_the_private_address() -> None:
    resolver = TableResolver(
        {"rebind.example": [["93.184.216.34"], ["10.0.0.1"], ["169.254.169.254"]]}
    )
    backend = NoSocketBackend()
    webhook = sender(resolver, backend)
    try:
        first = await webhook.send(
            "https://rebind.example/hook", headers=HEADERS, body=b"{}"
        )
        second = await webhook.send(
            "https://rebind.example/hook", headers=HEADERS, body=b"{}"
        )
        third = await webhook.send(
            "https://rebind.example/hook", headers=HEADERS, body=b"{}"
        )
    finally:
        await webhook.aclose()
    # The first answer was public: the connection went to that very address.
    assert first.verdict is Verdict.RETRY
    assert "ConnectError" in first.error
    assert second.verdict is Verdict.STOP and "private" in second.error
    assert third.verdict is Verdict.STOP and "metadata" in third.error
    assert backend.targets == [("93.184.216.34", 443)]


async def test_a_name_with_one_private_answer_is_refused() -> None:
    resolver = TableResolver({"mixed.example": [["93.184.216.34", "192.168.0.5"]]})
    backend = NoSocketBackend()
    webhook = sender(resolver, backend)
    try:
        result = await webhook.send(
            "http://mixed.example/", headers=HEADERS, body=b"{}"
        )
    finally:
        await webhook.aclose()
    assert result.verdict is Verdict.STOP
    assert backend.targets == []


async def test_allowed_networks_never_allow_metadata() -> None:
    resolver = TableResolver({"meta.example": [["169.254.169.254"]]})
    backend = NoSocketBackend()
    webhook = sender(resolver, backend, allowed=["169.254.0.0/16", "0.0.0.0/0"])
    try:
        named = await webhook.send("http://meta.example/", headers=HEADERS, body=b"{}")
        literal = await webhook.send(
            "http://169.254.169.254/", headers=HEADERS, body=b"{}"
        )
        allowed = await webhook.send("http://169.254.1.1/", headers=HEADERS, body=b"{}")
    finally:
        await webhook.aclose()
    assert named.verdict is Verdict.STOP and literal.verdict is Verdict.STOP
    # Allowed, so it got as far as the (socketless) connection.
    assert allowed.verdict is Verdict.RETRY
    assert backend.targets == [("169.254.1.1", 80)]


async def test_unresolvable_host_is_retried_not_stopped() -> None:
    resolver, backend = TableResolver({}), NoSocketBackend()
    webhook = sender(resolver, backend)
    try:
        result = await webhook.send(
            "http://nowhere.example/", headers=HEADERS, body=b"{}"
        )
    finally:
        await webhook.aclose()
    assert result.verdict is Verdict.RETRY
    assert backend.targets == []


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "0x7f.1", "::ffff:10.0.0.1", "2130706433"]
)
async def test_the_backend_itself_refuses_literals(host: str) -> None:
    backend = NoSocketBackend()
    guarded = GuardedBackend(
        policy=netguard.NetworkPolicy(), resolver=TableResolver({}), inner=backend
    )
    with pytest.raises(netguard.UrlRefused):
        await guarded.connect_tcp(host, 80)
    assert backend.targets == []
