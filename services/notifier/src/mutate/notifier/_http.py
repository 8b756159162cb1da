"""Sending one webhook try over HTTP, safely.

The safety check sits in the network backend, where httpcore opens sockets:
`GuardedBackend.connect_tcp` resolves the host once, checks every address
with `mutate.common.netguard`, and connects to a checked address itself, so a
DNS answer that changes between check and connect (rebinding) is never used.
TLS still verifies the certificate against, and sends SNI for, the original
host name: httpcore passes the URL's host as `server_hostname`. Redirects are
not followed, proxies from the environment are ignored, and at most a small
excerpt of the response body is read.

The resolver and the inner network backend are injected, so tests can
replace exactly the parts that touch the network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email.utils
import enum
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import httpcore
import httpx

from mutate.common import netguard, webhooks

logger = logging.getLogger(__name__)

USER_AGENT = "Mutate-Webhooks/1.0"


class Verdict(enum.Enum):
    """What a try means for the delivery."""

    DELIVERED = "delivered"
    RETRY = "retry"
    # Dead-letter now: 410 Gone, the stop header, or a refused URL.
    STOP = "stop"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TryResult:
    verdict: Verdict
    status_code: int | None = None
    excerpt: str = ""
    error: str = ""
    # Seconds the receiver asked us to wait (Retry-After), if it did.
    retry_after: float | None = None
    duration: float = 0.0


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses that passed the private-address check."""

    def __init__(
        self,
        *,
        policy: netguard.NetworkPolicy,
        resolver: netguard.Resolver = netguard.system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await netguard.resolve_checked(
            host, port, policy=self._policy, resolver=self._resolver
        )
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks never go to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, its connection pool opening sockets through a
    GuardedBackend."""

    def __init__(self, *, backend: GuardedBackend, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx has no network-backend argument; its request/response
        # mapping is what we reuse, over a pool built with our backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class WebhookSender:
    """POSTs signed bodies and sorts the outcome into a Verdict."""

    def __init__(
        self,
        *,
        policy: netguard.NetworkPolicy,
        timeout: float,
        excerpt_bytes: int,
        max_connections: int = 100,
        resolver: netguard.Resolver = netguard.system_resolver,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        instrument: Callable[[httpx.AsyncClient], None] | None = None,
    ) -> None:
        self._timeout = timeout
        self._policy = policy
        self._excerpt_bytes = excerpt_bytes
        backend = GuardedBackend(
            policy=policy, resolver=resolver, inner=network_backend
        )
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
        )
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(backend=backend, limits=limits),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": USER_AGENT},
        )
        if instrument is not None:
            # e.g. OpenTelemetry's httpx instrumentation: it wraps the
            # transport's request method, so the GuardedBackend still opens
            # every socket.
            instrument(self._client)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(
        self, url: str, *, headers: Mapping[str, str], body: bytes
    ) -> TryResult:
        """One try; never raises for anything the receiver or network did."""
        started = time.monotonic()
        try:
            target = netguard.parse_url(url)
            if target.literal is not None:
                # Checked again on connect; this answers without a pool trip.
                netguard.check_address(target.literal, self._policy, url=url)
            async with asyncio.timeout(self._timeout):
                status, response_headers, excerpt = await self._post(url, headers, body)
        except netguard.UrlRefused as exc:
            return self._failed(Verdict.STOP, exc.message, started)
        except httpx.InvalidURL as exc:
            return self._failed(Verdict.STOP, f"invalid URL: {exc}", started)
        except netguard.HostUnresolvable as exc:
            return self._failed(Verdict.RETRY, exc.message, started)
        except (TimeoutError, httpx.TimeoutException):
            return self._failed(
                Verdict.RETRY, f"timed out after {self._timeout:g}s", started
            )
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            return self._failed(Verdict.RETRY, error, started)
        duration = time.monotonic() - started
        return _judge(status, response_headers, excerpt, duration)

    async def _post(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, httpx.Headers, str]:
        request = self._client.build_request(
            "POST",
            url,
            content=body,
            headers={**headers, "content-type": "application/json"},
        )
        response = await self._client.send(request, stream=True)
        try:
            chunks = bytearray()
            async for chunk in response.aiter_raw():
                chunks += chunk
                if len(chunks) >= self._excerpt_bytes:
                    break
        finally:
            await response.aclose()
        text = bytes(chunks[: self._excerpt_bytes]).decode("utf-8", "replace")
        # PostgreSQL text cannot hold NUL.
        return response.status_code, response.headers, text.replace("\x00", "")

    @staticmethod
    def _failed(verdict: Verdict, error: str, started: float) -> TryResult:
        return TryResult(
            verdict=verdict, error=error, duration=time.monotonic() - started
        )


def _judge(
    status: int, headers: httpx.Headers, excerpt: str, duration: float
) -> TryResult:
    def result(
        verdict: Verdict, error: str = "", retry_after: float | None = None
    ) -> TryResult:
        return TryResult(
            verdict=verdict,
            status_code=status,
            excerpt=excerpt,
            error=error,
            retry_after=retry_after,
            duration=duration,
        )

    if 200 <= status < 300:
        return result(Verdict.DELIVERED)
    if status == 410:
        return result(Verdict.STOP, "HTTP 410 Gone")
    if headers.get(webhooks.STOP_HEADER, "").strip().lower() == "true":
        return result(
            Verdict.STOP, f"HTTP {status}; receiver sent {webhooks.STOP_HEADER}: true"
        )
    return result(
        Verdict.RETRY,
        f"HTTP {status}",
        retry_after_seconds(headers.get("retry-after")),
    )


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
