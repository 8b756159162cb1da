"""Helpers of the transformer tests: job requests, an event log, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from mutate.common import keys, messaging, topology
from mutate.v1 import configuration_pb2, events_pb2

ORG = "org_test"

CSV_SMALL = b"name,amount\nalpha,1\nbeta,2\ngamma,3\n"

# A workbook-shaped file that is not a zip: the engine refuses it at once.
CORRUPT_XLSX = b"PK\x03\x04 this is not really a workbook \x00\xff" * 8


def csv_configuration(**fields: Any) -> configuration_pb2.Configuration:
    """A CSV to CSV configuration with an id and version, as the gateway sends."""
    return configuration_pb2.Configuration(
        id="cfg_test",
        version=3,
        name="test",
        conversion_type=configuration_pb2.CSV_TO_CSV,
        **fields,
    )


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex[:20]}"


def job_request(
    job_id: str,
    *,
    input_key: str,
    file_name: str = "data.csv",
    configuration: configuration_pb2.Configuration | None = None,
    attempt: int = 1,
    output_key: str | None = None,
) -> events_pb2.JobRequest:
    request = events_pb2.JobRequest(
        job_id=job_id,
        organization_id=ORG,
        attempt=attempt,
        configuration=configuration or csv_configuration(),
        input_key=input_key,
        input_file_name=file_name,
        output_key=(
            output_key
            if output_key is not None
            else keys.output_key(ORG, job_id, "data.csv")
        ),
        webhook_url="https://hooks.example.test/mutate",
        client_reference=f"ref-{job_id}",
    )
    request.create_time.GetCurrentTime()
    return request


class EventLog:
    """Every job event on the stream, as an ordered consumer sees them."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self.messages: list[Msg] = []
        self._changed = asyncio.Event()
        self._sub: Any = None

    async def start(self) -> EventLog:
        self._sub = await self._js.subscribe(
            f"{topology.EVENTS_SUBJECT_PREFIX}.>",
            ordered_consumer=True,
            cb=self._on_message,
        )
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        self.messages.append(msg)
        self._changed.set()

    @property
    def events(self) -> list[events_pb2.JobEvent]:
        return [messaging.decode_event(m) for m in self.messages]

    def of(self, job_id: str) -> list[events_pb2.JobEvent]:
        return [e for e in self.events if e.job_id == job_id]

    def types(self, job_id: str) -> list[str]:
        return [messaging.event_type_name(e.type) for e in self.of(job_id)]

    def terminal(self, job_id: str) -> list[events_pb2.JobEvent]:
        return [e for e in self.of(job_id) if e.type in messaging.TERMINAL_EVENTS]

    async def wait_for(
        self, predicate: Callable[[], bool], *, timeout: float, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or predicate}; "
                    f"events: {[(e.job_id, e.type, e.delivery) for e in self.events]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))

    async def wait_terminal(self, job_ids: list[str] | str, *, timeout: float) -> None:
        wanted = [job_ids] if isinstance(job_ids, str) else list(job_ids)
        await self.wait_for(
            lambda: all(self.terminal(j) for j in wanted),
            timeout=timeout,
            what=f"terminal events of {len(wanted)} job(s)",
        )

    async def wait_type(self, job_id: str, type_name: str, *, timeout: float) -> None:
        await self.wait_for(
            lambda: type_name in self.types(job_id),
            timeout=timeout,
            what=f"{type_name} of {job_id}",
        )


async def wait_until(
    predicate: Callable[[], Any], *, timeout: float, what: str = ""
) -> None:
    """Poll an async-unaware condition until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def publish_jobs(
    js: JetStreamContext, requests: list[events_pb2.JobRequest]
) -> None:
    for request in requests:
        ack = await messaging.publish_job_request(js, request)
        assert not ack.duplicate


async def queue_depth(js: JetStreamContext) -> int:
    info = await js.stream_info(topology.JOBS_STREAM)
    return int(info.state.messages)


async def wait_queue_empty(js: JetStreamContext, *, timeout: float = 5.0) -> None:
    """Acks are fire-and-forget: the stream empties a moment after the event."""
    deadline = time.monotonic() + timeout
    while (depth := await queue_depth(js)) != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{depth} job request(s) still queued")
        await asyncio.sleep(0.05)


async def wait_delivered(
    js: JetStreamContext, *, at_least: int, timeout: float
) -> None:
    """Until the job consumer has made `at_least` deliveries in all."""
    deadline = time.monotonic() + timeout
    while (await consumer_state(js)).delivered.consumer_seq < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {at_least} deliveries")
        await asyncio.sleep(0.05)


async def consumer_state(js: JetStreamContext) -> Any:
    return await js.consumer_info(topology.JOBS_STREAM, topology.WORKERS_CONSUMER)
