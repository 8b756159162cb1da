"""Shared by the fault and abuse suites: platforms, a webhook receiver, checks.

The suites drive the whole platform (mutate.devstack.harness) the way a user
does: through the Python client and the REST API, with webhooks to a receiver
of their own on 127.0.0.1 that verifies every signature with
`mutate.common.webhooks`. "No job lost, none completed twice" is checked as a
client sees it: every job reaches COMPLETED once (GetJob, its status never
going backwards), its events stream holds one `completed` event, and the
receiver got exactly one webhook id with a successful, verified delivery
(several tries of that one id count once).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import http.server
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
import httpx
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mutate.client import ApiError, MutateClient, RetryPolicy
from mutate.common import webhooks
from mutate.devstack import stack as stk
from mutate.devstack.harness import PlatformHarness
from mutate.v1 import configuration_pb2, job_pb2, webhook_pb2

logger = logging.getLogger(__name__)

Job = job_pb2.Job
Delivery = webhook_pb2.Delivery
CSV = b"name,amount\nalice,1\nbob,2\ncarol,3\n"
TERMINAL = frozenset({Job.COMPLETED, Job.FAILED, Job.CANCELLED, Job.DEAD_LETTERED})
_RANK: dict[int, int] = {Job.PENDING: 0, Job.RUNNING: 1}

# Short time constants, so a fault is recovered from in seconds. Ack wait 2 s:
# a killed worker's job comes back quickly; a delivery limit and nak delays
# that outlast a 10 s storage outage (a job is never dead-lettered by it).
FAULT_ENV: dict[str, str] = {"MUTATE_JOB_ACK_WAIT_MS": "2000"}
FAULT_SERVICE_ENV: dict[str, dict[str, str]] = {
    "gateway": {
        "MUTATE_TRANSFORM_TIMEOUT_MS": "2000",
        "MUTATE_REQUEUE_AFTER_MS": "3000",
        "MUTATE_SWEEP_INTERVAL_MS": "500",
        "MUTATE_RPC_TIMEOUT_MS": "3000",
    },
    "transformer": {
        # Every conversion idles this long first: faults land mid-job.
        "MUTATE_TEST_ENGINE_DELAY_MS": "400",
        "MUTATE_WORKER_CONCURRENCY": "4",
        "MUTATE_JOB_DELIVERY_LIMIT": "12",
        "MUTATE_JOB_NAK_DELAY_MS": "250",
        "MUTATE_JOB_NAK_DELAY_MAX_MS": "3000",
        "MUTATE_JOB_PROGRESS_INTERVAL_MS": "100",
        "MUTATE_STORAGE_TIMEOUT_MS": "3000",
    },
    "notifier": {
        "WEBHOOK_TIMEOUT": "2000",
        "WEBHOOK_MAX_RETRIES": "12",
        "WEBHOOK_BACKOFF_BASE_MS": "300",
        "WEBHOOK_BACKOFF_FACTOR": "2",
        "WEBHOOK_BACKOFF_MAX_MS": "2000",
        "WEBHOOK_BACKOFF_JITTER": "0.1",
        "WEBHOOK_POLL_INTERVAL_MS": "100",
        "WEBHOOK_FETCH_WAIT_MS": "200",
        "MUTATE_STORAGE_TIMEOUT_MS": "2000",
    },
}
# Retries that outlast every fault here (a 10 s outage at most): full jitter
# waits half the ceiling on average, so about 25 s in all.
CLIENT_RETRIES = RetryPolicy(attempts=30, initial_backoff=0.2, max_backoff=2.0)


def platform_options(
    *, service_env: Mapping[str, Mapping[str, str]] | None = None, workers: int = 1
) -> dict[str, Any]:
    """Keyword arguments of `start_platform` / `platform_factory`."""
    merged = {k: dict(v) for k, v in FAULT_SERVICE_ENV.items()}
    for service, values in (service_env or {}).items():
        merged.setdefault(service, {}).update(values)
    return {"env": dict(FAULT_ENV), "per_service_env": merged, "workers": workers}


def show_logs_on_failure(request: pytest.FixtureRequest, platform: Any) -> None:
    report = getattr(request.node, "_mutate_report_call", None)
    if report is not None and report.failed:
        logger.error("platform logs:\n%s", platform.all_logs(chars=6000))
        print(platform.all_logs(chars=6000))  # noqa: T201 - shown by pytest


# --- webhook receiver -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Try:
    """One POST the receiver got."""

    webhook_id: str
    answered: int
    verified: bool
    payload: dict[str, Any] | None
    at: float
    headers: dict[str, str] = dataclasses.field(repr=False, default_factory=dict)
    body: bytes = dataclasses.field(repr=False, default=b"")


class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1 that can be down, fail, or succeed.

    Every POST is verified with the organization's secret (an unverified one
    is recorded and answered 401). `fail_first(n)` answers 500 to the first
    `n` tries of each webhook id, `fail_all()` to every try until undone.
    `stop()` closes the port (connection refused); `start()` opens the same
    port again.
    """

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.tries: list[Try] = []
        self._fail_first = 0
        self._failing = False
        self._seen: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def fail_first(self, count: int) -> None:
        self._fail_first = count

    def fail_all(self, failing: bool = True) -> None:
        """Answer 500 to every try while `failing`."""
        self._failing = failing

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                status = receiver._answer(dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _answer(self, headers: dict[str, str], body: bytes) -> int:
        lowered = {k.lower(): v for k, v in headers.items()}
        webhook_id = lowered.get(webhooks.ID_HEADER, "")
        payload: dict[str, Any] | None = None
        verified = False
        if self.secret is not None:
            try:
                payload = webhooks.verify(self.secret, headers, body)
                verified = True
            except webhooks.WebhookVerificationError:
                payload = None
        with self._lock:
            self._seen[webhook_id] += 1
            if not verified:
                status = 401
            elif self._failing or self._seen[webhook_id] <= self._fail_first:
                status = 500
            else:
                status = 200
            self.tries.append(
                Try(webhook_id, status, verified, payload, time.time(), lowered, body)
            )
        return status

    # --- what arrived -------------------------------------------------------------

    def delivered(self) -> dict[str, set[str]]:
        """job id -> the webhook ids answered 200 (verified) for it."""
        result: dict[str, set[str]] = collections.defaultdict(set)
        with self._lock:
            for t in self.tries:
                if t.answered == 200 and t.payload is not None:
                    result[t.payload["jobId"]].add(t.webhook_id)
        return result

    def payloads(self, webhook_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                t.payload
                for t in self.tries
                if t.webhook_id == webhook_id and t.payload is not None
            ]

    def tries_of(self, webhook_id: str) -> int:
        with self._lock:
            return sum(1 for t in self.tries if t.webhook_id == webhook_id)

    def wait_delivered(self, job_ids: Iterable[str], *, timeout: float) -> None:
        wanted = set(job_ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if wanted <= set(self.delivered()):
                return
            time.sleep(0.1)
        missing = wanted - set(self.delivered())
        raise AssertionError(
            f"no successful webhook for {len(missing)} jobs: {missing}"
        )


# --- client side ---------------------------------------------------------------------


@dataclasses.dataclass
class TenantClient:
    """An organization of the platform, its client and its webhook receiver."""

    platform: PlatformHarness
    org_id: str
    api_key: str
    secret: str | None
    client: MutateClient
    receiver: WebhookReceiver
    configuration_id: str = ""
    history: dict[str, list[tuple[int, int]]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(list)
    )

    def close(self) -> None:
        self.receiver.stop()
        self.client.close()

    def submit(self, *, mode: str = "async", key: str = "", name: str = "") -> Job:
        return self.client.submit(
            CSV,
            self.configuration_id,
            file_name=name or f"in-{uuid.uuid4().hex[:6]}.csv",
            mode=mode,  # type: ignore[arg-type]
            webhook_url=self.receiver.url,
            idempotency_key=key,
        )

    def submit_many(self, count: int, *, mode: str = "async") -> list[str]:
        return [self.submit(mode=mode).id for _ in range(count)]

    def observe(self, job_id: str) -> Job | None:
        """GetJob (None while the platform cannot answer); records history."""
        try:
            job = self.client.get_job(job_id)
        except ApiError as exc:
            if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
                return None
            raise
        self.history[job_id].append((job.attempt, job.status))
        return job

    def wait_terminal(
        self, job_ids: Iterable[str], *, timeout: float
    ) -> dict[str, Job]:
        pending = list(job_ids)
        final: dict[str, Job] = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                job = self.observe(job_id)
                if job is not None and job.status in TERMINAL:
                    final[job_id] = job
                    pending.remove(job_id)
            if pending:
                time.sleep(0.2)
        if pending:
            states = {j: self.history[j][-1:] for j in pending}
            raise AssertionError(f"{len(pending)} jobs never ended: {states}")
        return final


def new_tenant(platform: PlatformHarness, *, receiver: bool = True) -> TenantClient:
    org_id, api_key, secret = platform.create_tenant()
    client = MutateClient(
        platform.gateway_address, api_key, retries=CLIENT_RETRIES, timeout=30.0
    )
    hook = WebhookReceiver(secret)
    if receiver:
        hook.start()
    tenant = TenantClient(platform, org_id, api_key, secret, client, hook)
    tenant.configuration_id = client.create_configuration(
        csv_configuration(name=f"faults {uuid.uuid4().hex[:6]}")
    ).id
    return tenant


def csv_configuration(**fields: Any) -> configuration_pb2.Configuration:
    base: dict[str, Any] = {
        "name": f"csv {uuid.uuid4().hex[:6]}",
        "conversion_type": configuration_pb2.CSV_TO_CSV,
        "output_format": configuration_pb2.OutputFormat(
            type=configuration_pb2.OutputFormat.CSV
        ),
    }
    base.update(fields)
    return configuration_pb2.Configuration(**base)


# --- the invariants ---------------------------------------------------------


def completed_events(
    platform: PlatformHarness, org_id: str
) -> collections.Counter[str]:
    """job id -> number of `completed` events in the events stream."""

    async def read() -> collections.Counter[str]:
        nc = await nats.connect(
            platform.info.nats_url, connect_timeout=5, max_reconnect_attempts=0
        )
        counts: collections.Counter[str] = collections.Counter()
        try:
            js = nc.jetstream()
            subscription = await js.subscribe(
                f"mutate.events.{org_id}.*.completed", ordered_consumer=True
            )
            while True:
                try:
                    msg = await subscription.next_msg(timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    break
                counts[msg.subject.split(".")[3]] += 1
                if msg.metadata.num_pending == 0:
                    break
            await subscription.unsubscribe()
        finally:
            await nc.close()
        return counts

    return asyncio.run(read())


def assert_each_completed_once(
    tenant: TenantClient, job_ids: list[str], *, timeout: float = 90.0
) -> None:
    """The fault suite's verdict for `job_ids` (see the module docstring)."""
    assert len(set(job_ids)) == len(job_ids), "a job id was handed out twice"
    final = tenant.wait_terminal(job_ids, timeout=timeout)
    not_completed = {
        j: (Job.Status.Name(f.status), f.error.code, f.error.message)
        for j, f in final.items()
        if f.status != Job.COMPLETED
    }
    assert not not_completed, f"jobs that did not complete: {not_completed}"
    for job_id in job_ids:
        assert final[job_id].attempt == 1, final[job_id]
        assert_never_backwards(tenant.history[job_id], job_id)
    # Once more, after the dust settled: still completed, same attempt.
    for job_id in job_ids:
        again = tenant.client.get_job(job_id)
        assert (again.status, again.attempt) == (Job.COMPLETED, 1), again
    events = completed_events(tenant.platform, tenant.org_id)
    assert {j: events[j] for j in job_ids} == dict.fromkeys(job_ids, 1)
    tenant.receiver.wait_delivered(job_ids, timeout=timeout)
    delivered = tenant.receiver.delivered()
    twice = {j: ids for j, ids in delivered.items() if len(ids) != 1}
    assert not twice, f"jobs with more than one successful webhook id: {twice}"
    assert set(delivered) == set(job_ids), set(delivered) ^ set(job_ids)
    for job_id in job_ids:
        (webhook_id,) = delivered[job_id]
        payloads = tenant.receiver.payloads(webhook_id)
        assert {p["status"] for p in payloads} == {"completed"}
        assert {p["attempt"] for p in payloads} == {1}
    unverified = [t for t in tenant.receiver.tries if not t.verified]
    assert not unverified, unverified

    # The delivery log agrees: one delivered `job.completed` per job. A try
    # whose record was lost (the database away) is sent again, same webhook
    # id, once its lease (timeout + 10 s) runs out: at least once, by design.
    def completed_deliveries(job_id: str) -> list[Any]:
        return [
            d
            for d in tenant.client.list_job_deliveries(job_id).deliveries
            if d.event_type == "job.completed"
        ]

    def recorded(job_id: str) -> bool:
        return all(d.status == Delivery.DELIVERED for d in completed_deliveries(job_id))

    for job_id in job_ids:
        wait_until(
            functools.partial(recorded, job_id),
            timeout=40,
            what=f"the delivery of {job_id} to be recorded",
            every=0.5,
        )
        deliveries = completed_deliveries(job_id)
        assert len(deliveries) == 1, deliveries
        assert deliveries[0].webhook_id in delivered[job_id]
    # Re-sent tries carried the same webhook id: still one per job.
    assert all(len(ids) == 1 for ids in tenant.receiver.delivered().values())


def assert_never_backwards(history: list[tuple[int, int]], job_id: str) -> None:
    """Statuses seen by GetJob only move forward; a terminal one stays."""
    last_rank = -1
    terminal: int | None = None
    for attempt, status in history:
        assert attempt == 1, f"{job_id}: attempt {attempt} in {history}"
        if terminal is not None:
            assert status == terminal, f"{job_id} left {terminal}: {history}"
            continue
        rank = 2 if status in TERMINAL else _RANK[status]
        assert rank >= last_rank, f"{job_id} went backwards: {history}"
        last_rank = rank
        if status in TERMINAL:
            terminal = status


# --- health ---------------------------------------------------------------


def health_addresses(platform: PlatformHarness) -> dict[str, str]:
    addresses: dict[str, str] = {n: platform.address(n) for n in stk.SERVICES}
    for worker in platform.workers:
        if worker.health_address:
            addresses[worker.name] = worker.health_address
    return addresses


def assert_healthy(platform: PlatformHarness, *, timeout: float = 30.0) -> None:
    """Every service answers SERVING over gRPC health; REST /readyz is 200."""
    deadline = time.monotonic() + timeout
    problems: dict[str, str] = {}
    while time.monotonic() < deadline:
        problems = {}
        for name, address in health_addresses(platform).items():
            status = _health(address)
            if status != "SERVING":
                problems[name] = status
        try:
            ready = httpx.get(f"{platform.rest_url}/readyz", timeout=5).status_code
        except httpx.HTTPError as exc:
            ready = repr(exc)  # type: ignore[assignment]
        if ready != 200:
            problems["rest /readyz"] = str(ready)
        dead = [p.name for p in platform.dead_processes()]
        if dead:
            problems["exited"] = ", ".join(dead)
        if not problems:
            return
        time.sleep(0.25)
    raise AssertionError(f"platform not healthy: {problems}")


def _health(address: str) -> str:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=3
            )
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, every: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def rest_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except json.JSONDecodeError:
        return {"raw": response.text[:500]}
