"""What a dead-letter event says when the delivery before it died."""

from __future__ import annotations

from typing import Any

from mutate.common import topology
from mutate.transformer.faults import TransientFault
from mutate.transformer.worker import Worker, WorkerOptions, _ErrorRecord, _Job

from .helpers import job_request, new_job_id


class _FakeMsg:
    """Just enough of a JetStream message for `_Job` (no I/O happens)."""

    def __init__(self, delivered: int) -> None:
        self.metadata = type("Meta", (), {"num_delivered": delivered})()


def _options() -> WorkerOptions:
    return WorkerOptions(
        worker_id="w-test",
        concurrency=1,
        fetch_batch=1,
        fetch_timeout=0.1,
        delivery_limit=2,
        ack_wait=1.0,
        heartbeat_fraction=0.3,
        progress_interval=0.1,
        engine_timeout=1.0,
        engine_kill_grace=0.1,
        publish_timeout=1.0,
        nak_delay=0.01,
        nak_delay_factor=2.0,
        nak_delay_max=0.1,
    )


async def _worker(js: Any) -> Worker:
    worker = Worker(
        nc=js._nc,
        js=js,
        pool=None,
        storage=None,
        options=_options(),  # type: ignore[arg-type]
    )
    worker._errors = await js.key_value(topology.JOB_ERRORS_BUCKET)
    return worker


def _job(delivery: int) -> _Job:
    request = job_request(new_job_id(), input_key="input/org_test/j/data.csv")
    return _Job(_FakeMsg(delivery), request, token="t")  # type: ignore[arg-type]


async def test_no_record_means_the_worker_stopped(js: Any) -> None:
    worker = await _worker(js)

    error = await worker._recorded_error(_job(3))

    assert error.code == "WORKER_STOPPED"
    assert error.message == "worker stopped during delivery 2"
    assert error.retryable


async def test_an_earlier_error_is_kept_beside_the_stop(js: Any) -> None:
    worker = await _worker(js)
    job = _job(3)
    earlier = _job(1)
    earlier.request.CopyFrom(job.request)
    earlier.key = job.key
    await worker._record_error(
        earlier,
        TransientFault("STORAGE_UNAVAILABLE", "storage get: connection refused"),
    )

    error = await worker._recorded_error(job)

    assert error.code == "WORKER_STOPPED"
    assert error.message.startswith("worker stopped during delivery 2; ")
    assert "delivery 1 failed: storage get: connection refused" in error.message


async def test_the_last_deliverys_own_error_is_reported(js: Any) -> None:
    worker = await _worker(js)
    job = _job(3)
    kv = await js.key_value(topology.JOB_ERRORS_BUCKET)
    record = _ErrorRecord(delivery=2, code="NATS_UNAVAILABLE", message="x", worker="w")
    await kv.put(job.key, record.encode())

    error = await worker._recorded_error(job)

    assert error.code == "NATS_UNAVAILABLE"
    assert "gave up after 2 deliveries" in error.message
