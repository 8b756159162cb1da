"""The queue worker against real NATS JetStream, S3 and the storage service."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate

from mutate.common import keys, messaging, topology
from mutate.common.storage_client import StorageClient
from mutate.devstack import stack as stk
from mutate.devstack.servers import S3Server
from mutate.v1 import events_pb2

from .conftest import StartWorker, Upload, s3_keys
from .helpers import (
    CORRUPT_XLSX,
    CSV_SMALL,
    ORG,
    EventLog,
    consumer_state,
    job_request,
    new_job_id,
    publish_jobs,
    wait_delivered,
    wait_queue_empty,
)

SLOW = {"MUTATE_TEST_ENGINE_DELAY_MS": "3000"}


async def test_worker_runs_a_queued_job(
    js: Any,
    events: EventLog,
    upload: Upload,
    storage: StorageClient,
    start_worker: StartWorker,
) -> None:
    start_worker("w1")
    job_id = new_job_id()
    request = job_request(job_id, input_key=await upload(job_id, CSV_SMALL))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    producer = propagate.extract({"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    token = otel_context.attach(producer)
    try:
        await publish_jobs(js, [request])
    finally:
        otel_context.detach(token)

    await events.wait_terminal(job_id, timeout=20)

    assert events.types(job_id) == ["started", "completed"]
    for message in events.messages:
        assert trace_id in (message.headers or {}).get("traceparent", "")
    started, completed = events.of(job_id)
    for event in (started, completed):
        assert event.organization_id == ORG
        assert event.attempt == 1
        assert event.delivery == 1
        assert event.worker_id == "w1"
        assert event.configuration_id == "cfg_test"
        assert event.configuration_version == 3
        assert event.webhook_url == "https://hooks.example.test/mutate"
        assert event.client_reference == f"ref-{job_id}"
    assert started.HasField("start_time")
    output = completed.output
    assert output.key == request.output_key
    assert output.rows == 3
    assert output.columns == 2
    assert output.bytes == len(CSV_SMALL)
    assert output.content_type.startswith("text/csv")
    assert len(output.sha256) == 64
    assert await storage.get_bytes(output.key) == CSV_SMALL

    headers = events.messages[-1].headers or {}
    assert headers[messaging.JOB_ID_HEADER] == job_id
    assert headers[messaging.ORGANIZATION_HEADER] == ORG
    assert headers[messaging.ATTEMPT_HEADER] == "1"
    assert headers[messaging.MSG_ID_HEADER] == f"{job_id}.1.completed"

    # Acked: gone from the work queue, nothing pending or redelivered.
    await wait_queue_empty(js)
    state = await consumer_state(js)
    assert state.num_ack_pending == 0
    assert state.num_redelivered == 0


async def test_worker_takes_an_input_the_request_carries(
    js: Any, events: EventLog, storage: StorageClient, start_worker: StartWorker
) -> None:
    start_worker("w1")
    job_id = new_job_id()
    # Nothing stored under the key: only the request's copy can be read.
    request = job_request(job_id, input_key=keys.input_key(ORG, job_id, "data.csv"))
    request.input_data = CSV_SMALL
    await publish_jobs(js, [request])

    await events.wait_terminal(job_id, timeout=20)

    assert events.types(job_id) == ["started", "completed"]
    assert await storage.get_bytes(events.terminal(job_id)[0].output.key) == CSV_SMALL


async def test_worker_fails_a_corrupt_file_at_once(
    js: Any, events: EventLog, upload: Upload, start_worker: StartWorker
) -> None:
    start_worker("w1")
    job_id = new_job_id()
    request = job_request(
        job_id,
        input_key=await upload(job_id, CORRUPT_XLSX, "book.xlsx"),
        file_name="book.xlsx",
        configuration=_xlsx_configuration(),
    )
    await publish_jobs(js, [request])

    await events.wait_terminal(job_id, timeout=20)
    await asyncio.sleep(0.5)  # room for a wrong redelivery to show up

    assert events.types(job_id) == ["started", "failed"]
    failed = events.terminal(job_id)[0]
    assert failed.delivery == 1
    assert failed.error.code
    assert "book.xlsx" in failed.error.message
    assert not failed.error.retryable
    await wait_queue_empty(js)
    state = await consumer_state(js)
    assert state.num_redelivered == 0
    assert state.num_ack_pending == 0


async def test_worker_dead_letters_after_the_delivery_limit(
    js: Any,
    events: EventLog,
    upload: Upload,
    start_worker: StartWorker,
    platform: stk.StackInfo,
) -> None:
    # A storage address where nothing listens: every delivery fails
    # transiently.
    start_worker(
        "w1",
        env={
            "MUTATE_STORAGE_ADDRESS": f"127.0.0.1:{_closed_port()}",
            "MUTATE_JOB_DELIVERY_LIMIT": "3",
        },
    )
    job_id = new_job_id()
    await publish_jobs(
        js, [job_request(job_id, input_key=await upload(job_id, CSV_SMALL))]
    )

    await events.wait_terminal(job_id, timeout=20)
    await asyncio.sleep(0.5)

    terminal = events.terminal(job_id)
    assert [messaging.event_type_name(e.type) for e in terminal] == ["dead_lettered"]
    dead = terminal[0]
    assert dead.delivery == 3
    assert dead.error.code == "STORAGE_UNAVAILABLE"
    assert dead.error.retryable
    assert dead.webhook_url and dead.configuration_id == "cfg_test"
    # No delivery got its input, so none started the conversion.
    assert events.types(job_id) == ["dead_lettered"]
    await wait_queue_empty(js)
    state = await consumer_state(js)
    assert state.delivered.consumer_seq == 3


async def test_worker_sigkilled_mid_job_is_redelivered_and_completes(
    js: Any,
    events: EventLog,
    upload: Upload,
    storage: StorageClient,
    start_worker: StartWorker,
) -> None:
    doomed = start_worker("doomed", env=SLOW)
    job_id = new_job_id()
    request = job_request(job_id, input_key=await upload(job_id, CSV_SMALL))
    await publish_jobs(js, [request])
    await events.wait_type(job_id, "started", timeout=20)

    doomed.kill()
    start_worker("rescuer")
    await events.wait_terminal(job_id, timeout=30)

    terminal = events.terminal(job_id)
    assert len(terminal) == 1
    completed = terminal[0]
    assert completed.type == events_pb2.JobEvent.COMPLETED
    assert completed.worker_id == "rescuer"
    assert completed.delivery == 2
    assert completed.output.key == request.output_key
    assert await storage.get_bytes(request.output_key) == CSV_SMALL
    await wait_queue_empty(js)


async def test_worker_killed_in_its_last_delivery_dead_letters(
    js: Any, events: EventLog, upload: Upload, start_worker: StartWorker
) -> None:
    limit = {"MUTATE_JOB_DELIVERY_LIMIT": "1"}
    doomed = start_worker("doomed", env={**SLOW, **limit})
    job_id = new_job_id()
    await publish_jobs(
        js, [job_request(job_id, input_key=await upload(job_id, CSV_SMALL))]
    )
    await events.wait_type(job_id, "started", timeout=20)

    doomed.kill()
    start_worker("next", env=limit)
    await events.wait_terminal(job_id, timeout=30)
    await asyncio.sleep(0.3)

    terminal = events.terminal(job_id)
    assert len(terminal) == 1
    dead = terminal[0]
    assert dead.type == events_pb2.JobEvent.DEAD_LETTERED
    assert dead.delivery == 2
    assert dead.error.code == "WORKER_STOPPED"
    assert "worker stopped during delivery 1" in dead.error.message
    # Never stuck: terminated, not left in the work queue.
    await wait_queue_empty(js)
    assert (await consumer_state(js)).num_ack_pending == 0


async def test_worker_recovers_when_storage_comes_back(
    js: Any,
    events: EventLog,
    start_worker: StartWorker,
    nats_server: Any,
    s3_server: S3Server,
    module_bucket: str,
    tmp_path: Any,
) -> None:
    from .conftest import make_stack, start_storage

    stack = make_stack(nats_server, s3_server, module_bucket)
    own_storage = start_storage(stack, tmp_path / "own-storage")
    try:
        start_worker(
            "w1",
            stack=stack,
            env={
                "MUTATE_JOB_DELIVERY_LIMIT": "20",
                "MUTATE_JOB_NAK_DELAY_MS": "100",
                "MUTATE_JOB_NAK_DELAY_MAX_MS": "300",
            },
        )
        job_id = new_job_id()
        async with StorageClient(stack.address("storage")) as client:
            key = keys.input_key(ORG, job_id, "data.csv")
            await client.put_bytes(key, CSV_SMALL)
        own_storage.stop()

        await publish_jobs(js, [job_request(job_id, input_key=key)])
        await wait_delivered(js, at_least=3, timeout=20)
        assert not events.of(job_id)
        own_storage.start()

        await events.wait_terminal(job_id, timeout=30)
    finally:
        own_storage.stop()
    completed = events.terminal(job_id)
    assert len(completed) == 1
    assert completed[0].type == events_pb2.JobEvent.COMPLETED
    assert completed[0].delivery >= 2


async def test_fifty_jobs_over_three_workers_complete_once_each(
    js: Any,
    events: EventLog,
    upload: Upload,
    start_worker: StartWorker,
    s3_server: S3Server,
    module_bucket: str,
) -> None:
    workers = [start_worker(name, wait=False) for name in ("w1", "w2", "w3")]
    # Publish once all three are up, so none is late to the queue.
    for process in workers:
        process.wait_healthy()
    job_ids = [new_job_id() for _ in range(50)]
    requests = [
        job_request(j, input_key=await upload(j, CSV_SMALL + j.encode() + b",9\n"))
        for j in job_ids
    ]
    await publish_jobs(js, requests)

    await events.wait_terminal(job_ids, timeout=60)
    await asyncio.sleep(0.5)

    completed = [e for e in events.events if e.type == events_pb2.JobEvent.COMPLETED]
    assert sorted(e.job_id for e in completed) == sorted(job_ids)
    assert all(len(events.terminal(j)) == 1 for j in job_ids)
    assert {e.worker_id for e in completed} == {"w1", "w2", "w3"}
    outputs = s3_keys(s3_server, module_bucket, f"output/{ORG}/")
    for job_id in job_ids:
        assert [k for k in outputs if f"/{job_id}/" in k] == [
            keys.output_key(ORG, job_id, "data.csv")
        ]
    stream = await js.stream_info(topology.EVENTS_STREAM)
    assert stream.state.messages == len(events.messages)
    names = [messaging.event_type_name(e.type) for e in events.events]
    assert names.count("started") == names.count("completed") == 50
    # A job slowed by the others may report progress; nothing else is there.
    assert set(names) <= {"started", "progress", "completed"}
    await wait_queue_empty(js)


def _xlsx_configuration() -> Any:
    from mutate.v1 import configuration_pb2

    return configuration_pb2.Configuration(
        id="cfg_test", version=3, conversion_type=configuration_pb2.XLSX_TO_CSV
    )


def _closed_port() -> int:
    from mutate.devstack import _proc

    return _proc.free_port()


pytestmark = pytest.mark.timeout(120)


async def test_job_cancelled_before_it_starts_never_starts(
    js: Any, events: EventLog, upload: Upload, start_worker: StartWorker
) -> None:
    job_id = new_job_id()
    cancellations = await js.key_value(topology.CANCELLATIONS_BUCKET)
    await cancellations.put(topology.cancellation_key(job_id, 1), b"user")
    await publish_jobs(
        js, [job_request(job_id, input_key=await upload(job_id, CSV_SMALL))]
    )
    start_worker("w1")

    await events.wait_terminal(job_id, timeout=20)

    assert events.types(job_id) == ["cancelled"]
    assert events.terminal(job_id)[0].client_reference == f"ref-{job_id}"
    await wait_queue_empty(js)


async def test_job_cancelled_while_running_stops(
    js: Any,
    events: EventLog,
    upload: Upload,
    start_worker: StartWorker,
    s3_server: S3Server,
    module_bucket: str,
) -> None:
    worker = start_worker("w1", env={"MUTATE_TEST_ENGINE_DELAY_MS": "10000"})
    job_id = new_job_id()
    await publish_jobs(
        js, [job_request(job_id, input_key=await upload(job_id, CSV_SMALL))]
    )
    await events.wait_type(job_id, "started", timeout=20)

    cancellations = await js.key_value(topology.CANCELLATIONS_BUCKET)
    clock = asyncio.get_running_loop().time()
    await cancellations.put(topology.cancellation_key(job_id, 1), b"user")
    await events.wait_terminal(job_id, timeout=5)

    assert asyncio.get_running_loop().time() - clock < 2.0
    assert events.types(job_id)[-1] == "cancelled"
    assert "completed" not in events.types(job_id)
    assert not s3_keys(s3_server, module_bucket, f"output/{ORG}/{job_id}/")
    await wait_queue_empty(js)
    # The log line says which job (it is written outside the job's context).
    lines = worker.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    said = [r for r in records if r["message"] == "job cancelled while running"]
    assert [r.get("job_id") for r in said] == [job_id], lines[-20:]


async def test_a_retry_is_not_affected_by_a_cancelled_attempt(
    js: Any, events: EventLog, upload: Upload, start_worker: StartWorker
) -> None:
    job_id = new_job_id()
    cancellations = await js.key_value(topology.CANCELLATIONS_BUCKET)
    await cancellations.put(topology.cancellation_key(job_id, 1), b"user")
    key = await upload(job_id, CSV_SMALL)
    await publish_jobs(js, [job_request(job_id, input_key=key, attempt=2)])
    start_worker("w1")

    await events.wait_terminal(job_id, timeout=20)

    assert events.types(job_id) == ["started", "completed"]
    assert events.terminal(job_id)[0].attempt == 2


async def test_running_job_reports_progress_then_completes(
    js: Any, events: EventLog, upload: Upload, start_worker: StartWorker
) -> None:
    start_worker("w1", env={"MUTATE_TEST_ENGINE_DELAY_MS": "1000"})
    job_id = new_job_id()
    await publish_jobs(
        js, [job_request(job_id, input_key=await upload(job_id, CSV_SMALL))]
    )

    await events.wait_terminal(job_id, timeout=20)

    types = events.types(job_id)
    assert types[0] == "started"
    assert types[-1] == "completed"
    progress = [e.progress_percent for e in events.of(job_id) if e.type == 2]
    assert len(progress) >= 2
    assert progress == sorted(progress)
    assert all(0 <= p <= 100 for p in progress)
    assert set(types[1:-1]) == {"progress"}


async def test_sigterm_during_a_long_job_finishes_it_within_the_grace(
    js: Any, events: EventLog, upload: Upload, start_worker: StartWorker
) -> None:
    worker = start_worker(
        "w1",
        env={"MUTATE_TEST_ENGINE_DELAY_MS": "1500", "MUTATE_SHUTDOWN_GRACE_MS": "5000"},
    )
    job_id = new_job_id()
    await publish_jobs(
        js, [job_request(job_id, input_key=await upload(job_id, CSV_SMALL))]
    )
    await events.wait_type(job_id, "started", timeout=20)

    code = await asyncio.to_thread(worker.stop)

    assert code == 0
    assert events.types(job_id)[-1] == "completed"
    assert events.terminal(job_id)[0].worker_id == "w1"
    await wait_queue_empty(js)


async def test_sigterm_past_the_grace_gives_the_job_back(
    js: Any, events: EventLog, upload: Upload, start_worker: StartWorker
) -> None:
    worker = start_worker(
        "w1",
        env={"MUTATE_TEST_ENGINE_DELAY_MS": "4000", "MUTATE_SHUTDOWN_GRACE_MS": "300"},
    )
    job_id = new_job_id()
    await publish_jobs(
        js, [job_request(job_id, input_key=await upload(job_id, CSV_SMALL))]
    )
    await events.wait_type(job_id, "started", timeout=20)

    clock = asyncio.get_running_loop().time()
    code = await asyncio.to_thread(worker.stop)
    # Bounded: grace + fetch timeout + the engine's kill grace, not the job.
    assert asyncio.get_running_loop().time() - clock < 3.5
    assert code == 0
    assert not events.terminal(job_id)

    start_worker("w2")
    await events.wait_terminal(job_id, timeout=20)
    terminal = events.terminal(job_id)
    assert len(terminal) == 1
    assert terminal[0].type == events_pb2.JobEvent.COMPLETED
    assert terminal[0].worker_id == "w2"
    assert terminal[0].delivery == 2
    await wait_queue_empty(js)


async def test_undecodable_request_is_terminated_and_the_worker_goes_on(
    js: Any, events: EventLog, upload: Upload, start_worker: StartWorker
) -> None:
    start_worker("w1")
    await js.publish(topology.JOBS_SUBJECT, b"\xff\xff not a protobuf")
    job_id = new_job_id()
    await publish_jobs(
        js, [job_request(job_id, input_key=await upload(job_id, CSV_SMALL))]
    )

    await events.wait_terminal(job_id, timeout=20)

    assert events.types(job_id) == ["started", "completed"]
    await wait_queue_empty(js)
