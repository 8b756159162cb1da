"""JobService over gRPC: sync and async paths, files, idempotency, lifecycle."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import httpx
import nats
import pytest

from mutate.common import topology
from mutate.v1 import configuration_pb2, events_pb2, job_pb2, public_api_pb2

from .conftest import MAX_INPUT_BYTES, SYNC_MAX_BYTES, Platform
from .helpers import CSV, Tenant, wait_for_status

pb = public_api_pb2
Job = job_pb2.Job


async def _create(tenant: Tenant, **fields: Any) -> job_pb2.Job:
    return await tenant.jobs.CreateJob(
        pb.CreateJobRequest(**fields), metadata=tenant.metadata
    )


def _objects(client: Any, bucket: str, prefix: str) -> list[Any]:
    return list(client.list_objects(bucket, prefix=prefix, recursive=True))


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_create_job_sync_inline_completes_and_downloads(tenant: Tenant) -> None:
    configuration = await tenant.configuration()
    job = await _create(
        tenant,
        configuration_id=configuration.id,
        file_content=CSV,
        file_name="people.csv",
        client_reference="ref-1",
    )
    assert job.status == Job.COMPLETED, job
    assert (job.attempt, job.configuration_version) == (1, 1)
    assert job.input_file_name == "people.csv"
    assert job.input_bytes == len(CSV)
    assert job.output_rows >= 3
    assert job.output_file_name == "people.csv"
    assert job.client_reference == "ref-1"
    assert job.HasField("finish_time")
    assert job.execution_log is not None

    download = await tenant.jobs.GetJobDownload(
        pb.GetJobDownloadRequest(id=job.id), metadata=tenant.metadata
    )
    assert download.bytes == job.output_bytes
    assert download.HasField("expire_time")
    async with httpx.AsyncClient() as http:
        response = await http.get(download.url)
    assert response.status_code == 200
    assert b"alice" in response.content


async def test_async_job_is_queued_then_projected_and_watched(tenant: Tenant) -> None:
    configuration = await tenant.configuration()
    job = await _create(
        tenant,
        configuration_id=configuration.id,
        file_content=CSV,
        file_name="a.csv",
        mode=Job.ASYNC,
    )
    assert job.status == Job.PENDING
    seen = [
        update
        async for update in tenant.jobs.WatchJob(
            pb.WatchJobRequest(id=job.id), metadata=tenant.metadata, timeout=20
        )
    ]
    assert seen[0].status in (Job.PENDING, Job.RUNNING)
    assert seen[-1].status == Job.COMPLETED
    assert len(seen) >= 2
    final = await wait_for_status(tenant, job.id, Job.COMPLETED)
    assert final.output_rows >= 3
    assert final.HasField("start_time")


async def test_auto_mode_over_the_sync_limit_goes_to_the_queue(tenant: Tenant) -> None:
    configuration = await tenant.configuration()
    big = CSV + b"".join(b"row%d,%d\n" % (i, i) for i in range(SYNC_MAX_BYTES // 8))
    assert SYNC_MAX_BYTES < len(big) < MAX_INPUT_BYTES
    job = await _create(tenant, configuration_id=configuration.id, file_content=big)
    assert job.status == Job.PENDING
    assert job.mode == Job.AUTO
    await wait_for_status(tenant, job.id, Job.COMPLETED)

    error = await _error(
        _create(
            tenant, configuration_id=configuration.id, file_content=big, mode=Job.SYNC
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "synchronous limit" in (error.details() or "")


async def test_queued_small_inputs_travel_in_the_job_request(
    tenant: Tenant, platform: Platform
) -> None:
    configuration = await tenant.configuration()
    # Over the default MUTATE_INLINE_INPUT_MAX_BYTES (512 KiB), under the
    # tests' MUTATE_MAX_INPUT_BYTES.
    big = CSV + b"".join(b"row%d,%d\n" % (i, i) for i in range(60_000))
    assert 512 * 1024 < len(big) < MAX_INPUT_BYTES
    nc = await nats.connect(platform.info.nats_url, max_reconnect_attempts=0)
    requests: dict[str, events_pb2.JobRequest] = {}

    async def seen(msg: Any) -> None:
        request = events_pb2.JobRequest.FromString(msg.data)
        requests[request.job_id] = request

    try:
        await nc.subscribe(topology.JOBS_SUBJECT, cb=seen)
        await nc.flush()
        small = await _create(
            tenant, configuration_id=configuration.id, file_content=CSV, mode=Job.ASYNC
        )
        large = await _create(
            tenant, configuration_id=configuration.id, file_content=big, mode=Job.ASYNC
        )
        for job in (small, large):
            await wait_for_status(tenant, job.id, Job.COMPLETED)
    finally:
        await nc.close()
    assert requests[small.id].input_data == CSV
    # Too large to carry: the worker reads the stored input.
    assert requests[large.id].input_data == b""
    assert requests[large.id].input_key


async def test_upload_job_streams_the_file_in_chunks(tenant: Tenant) -> None:
    configuration = await tenant.configuration()

    async def parts() -> Any:
        yield pb.UploadJobRequest(
            request=pb.CreateJobRequest(
                configuration_id=configuration.id, file_name="streamed.csv"
            )
        )
        for start in range(0, len(CSV), 7):
            yield pb.UploadJobRequest(chunk=CSV[start : start + 7])

    job = await tenant.jobs.UploadJob(parts(), metadata=tenant.metadata)
    assert job.status == Job.COMPLETED
    assert job.input_bytes == len(CSV)
    assert job.input_file_name == "streamed.csv"


async def test_presigned_upload_feeds_a_job_of_its_organization_only(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    configuration = await tenant.configuration()
    upload = await tenant.uploads.CreateUpload(
        pb.CreateUploadRequest(file_name="big.csv", content_type="text/csv"),
        metadata=tenant.metadata,
    )
    assert upload.id.startswith("upl_")
    assert upload.max_bytes == MAX_INPUT_BYTES

    # Not PUT yet: the job is refused with what to do.
    error = await _error(
        _create(tenant, configuration_id=configuration.id, upload_id=upload.id)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "PUT" in (error.details() or "")

    async with httpx.AsyncClient() as http:
        response = await http.put(upload.url, content=CSV, headers=dict(upload.headers))
    assert response.status_code == 200, response.text

    job = await _create(tenant, configuration_id=configuration.id, upload_id=upload.id)
    assert job.status == Job.COMPLETED
    assert job.input_bytes == len(CSV)
    assert job.input_file_name == "big.csv"

    other_configuration = await other_tenant.configuration()
    error = await _error(
        _create(
            other_tenant,
            configuration_id=other_configuration.id,
            upload_id=upload.id,
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"configuration_id": ""}, "INVALID_ARGUMENT", "configuration_id"),
        ({"configuration_id": "cfg_nope"}, "NOT_FOUND", "not found"),
        ({"file_content": None}, "INVALID_ARGUMENT", "file is required"),
        ({"file_content": b""}, "INVALID_ARGUMENT", "empty"),
        ({"file_content": b"x" * (MAX_INPUT_BYTES + 1)}, "INVALID_ARGUMENT", "largest"),
        ({"file_name": "book.xlsx"}, "INVALID_ARGUMENT", "looks like XLSX"),
        ({"webhook_url": "ftp://example.com/x"}, "INVALID_ARGUMENT", "http"),
        (
            {"webhook_url": "http://169.254.169.254/latest"},
            "INVALID_ARGUMENT",
            "metadata",
        ),
        ({"upload_id": "upl_nope", "file_content": None}, "NOT_FOUND", "upload"),
        ({"configuration_version": 7}, "NOT_FOUND", "version 7"),
        ({"configuration_version": -1}, "INVALID_ARGUMENT", "negative"),
    ],
)
async def test_create_job_bad_input_says_what_to_fix(
    tenant: Tenant, fields: dict[str, Any], code: str, words: str
) -> None:
    configuration = await tenant.configuration()
    request: dict[str, Any] = {
        "configuration_id": configuration.id,
        "file_content": CSV,
        "file_name": "a.csv",
    }
    request.update(fields)
    request = {k: v for k, v in request.items() if v is not None}
    error = await _error(_create(tenant, **request))
    assert error.code().name == code, error.details()
    assert words in (error.details() or ""), error.details()


async def test_idempotency_key_under_concurrent_duplicates_makes_one_job(
    tenant: Tenant,
) -> None:
    configuration = await tenant.configuration()
    key = f"idem-{uuid.uuid4()}"
    request = pb.CreateJobRequest(
        configuration_id=configuration.id, file_content=CSV, file_name="a.csv"
    )
    jobs = await asyncio.gather(
        *(
            tenant.jobs.CreateJob(request, metadata=tenant.md(idempotency_key=key))
            for _ in range(20)
        )
    )
    assert len({job.id for job in jobs}) == 1
    assert all(job.status == Job.COMPLETED for job in jobs)
    listed = await tenant.jobs.ListJobs(
        pb.ListJobsRequest(configuration_id=configuration.id), metadata=tenant.metadata
    )
    assert [job.id for job in listed.jobs] == [jobs[0].id]

    # The key in the body works the same as the header.
    again = await tenant.jobs.CreateJob(
        pb.CreateJobRequest(
            configuration_id=configuration.id,
            file_content=CSV,
            file_name="a.csv",
            idempotency_key=key,
        ),
        metadata=tenant.metadata,
    )
    assert again.id == jobs[0].id

    # Same key, another body: a conflict, not a second job.
    error = await _error(
        tenant.jobs.CreateJob(
            pb.CreateJobRequest(
                configuration_id=configuration.id,
                file_content=CSV + b"dave,4\n",
                file_name="a.csv",
            ),
            metadata=tenant.md(idempotency_key=key),
        )
    )
    assert error.code() == grpc.StatusCode.ABORTED
    assert "different request" in (error.details() or "")


async def test_idempotency_keys_are_per_organization(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    key = f"shared-{uuid.uuid4()}"
    ids = []
    for who in (tenant, other_tenant):
        configuration = await who.configuration()
        job = await who.jobs.CreateJob(
            pb.CreateJobRequest(configuration_id=configuration.id, file_content=CSV),
            metadata=who.md(idempotency_key=key),
        )
        ids.append(job.id)
    assert ids[0] != ids[1]


async def test_failed_job_reports_why_and_retry_runs_a_new_attempt(
    tenant: Tenant,
) -> None:
    configuration = await tenant.configuration(
        rules=[
            configuration_pb2.Rule(
                id="check",
                validate_columns=configuration_pb2.ValidateColumns(
                    required_headers=["missing"]
                ),
            )
        ]
    )
    job = await _create(tenant, configuration_id=configuration.id, file_content=CSV)
    assert job.status == Job.FAILED, job
    assert job.error.code
    assert job.error.message

    error = await _error(
        tenant.jobs.GetJobDownload(
            pb.GetJobDownloadRequest(id=job.id), metadata=tenant.metadata
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    retried = await tenant.jobs.RetryJob(
        pb.RetryJobRequest(id=job.id), metadata=tenant.metadata
    )
    assert retried.attempt == 2
    assert retried.status == Job.PENDING
    assert not retried.HasField("error")
    final = await wait_for_status(tenant, job.id, Job.FAILED)
    assert final.attempt == 2


async def test_cancel_retry_and_delete(tenant: Tenant, s3: tuple[Any, str]) -> None:
    configuration = await tenant.configuration()
    job = await _create(
        tenant, configuration_id=configuration.id, file_content=CSV, mode=Job.ASYNC
    )
    cancelled = await tenant.jobs.CancelJob(
        pb.CancelJobRequest(id=job.id), metadata=tenant.metadata
    )
    assert cancelled.status == Job.CANCELLED
    # Stays cancelled: the worker honours the mark or its late events lose.
    await asyncio.sleep(0.6)
    current = await tenant.jobs.GetJob(
        pb.GetJobRequest(id=job.id), metadata=tenant.metadata
    )
    assert current.status == Job.CANCELLED

    error = await _error(
        tenant.jobs.CancelJob(pb.CancelJobRequest(id=job.id), metadata=tenant.metadata)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    retried = await tenant.jobs.RetryJob(
        pb.RetryJobRequest(id=job.id), metadata=tenant.metadata
    )
    assert retried.attempt == 2
    done = await wait_for_status(tenant, job.id, Job.COMPLETED)
    assert done.attempt == 2

    error = await _error(
        tenant.jobs.RetryJob(pb.RetryJobRequest(id=job.id), metadata=tenant.metadata)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    client, bucket = s3
    prefixes = [
        f"input/{tenant.organization_id}/{job.id}/",
        f"output/{tenant.organization_id}/{job.id}/",
    ]
    assert all(
        list(client.list_objects(bucket, prefix=p, recursive=True)) for p in prefixes
    )
    await tenant.jobs.DeleteJob(
        pb.DeleteJobRequest(id=job.id), metadata=tenant.metadata
    )
    error = await _error(
        tenant.jobs.GetJob(pb.GetJobRequest(id=job.id), metadata=tenant.metadata)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert not any(
        list(client.list_objects(bucket, prefix=p, recursive=True)) for p in prefixes
    )


async def test_list_jobs_filters_and_pages(tenant: Tenant) -> None:
    first = await tenant.configuration()
    second = await tenant.configuration()
    made = []
    for configuration in (first, first, first, second):
        job = await _create(tenant, configuration_id=configuration.id, file_content=CSV)
        made.append(job.id)

    pages: list[str] = []
    token = ""
    while True:
        page = await tenant.jobs.ListJobs(
            pb.ListJobsRequest(
                page_size=2, page_token=token, configuration_id=first.id
            ),
            metadata=tenant.metadata,
        )
        pages.extend(job.id for job in page.jobs)
        token = page.next_page_token
        if not token:
            break
    assert pages == list(reversed(made[:3]))

    completed = await tenant.jobs.ListJobs(
        pb.ListJobsRequest(status=Job.COMPLETED), metadata=tenant.metadata
    )
    assert len(completed.jobs) == 4
    failed = await tenant.jobs.ListJobs(
        pb.ListJobsRequest(status=Job.FAILED), metadata=tenant.metadata
    )
    assert not failed.jobs

    later = pb.ListJobsRequest()
    later.created_after.FromJsonString("2999-01-01T00:00:00Z")
    assert not (await tenant.jobs.ListJobs(later, metadata=tenant.metadata)).jobs

    for request, words in (
        (pb.ListJobsRequest(page_token="garbage!"), "page_token"),
        (pb.ListJobsRequest(page_size=501), "maximum"),
        (
            pb.ListJobsRequest(page_size=1, page_token=page.next_page_token or "e30"),
            "page_token",
        ),
    ):
        error = await _error(tenant.jobs.ListJobs(request, metadata=tenant.metadata))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in (error.details() or "")

    # A token is bound to its filters.
    page = await tenant.jobs.ListJobs(
        pb.ListJobsRequest(page_size=1), metadata=tenant.metadata
    )
    error = await _error(
        tenant.jobs.ListJobs(
            pb.ListJobsRequest(
                page_size=1, page_token=page.next_page_token, configuration_id=first.id
            ),
            metadata=tenant.metadata,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
