"""The input size limit agrees with the transformer's, and job errors never show
storage keys: against the session platform (real NATS, PostgreSQL, S3)."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest

from mutate.common.keys import without_storage_keys
from mutate.common.settings import load
from mutate.gateway.projection import merge_event
from mutate.gateway.public_errors import size_text
from mutate.gateway.settings import GatewaySettings
from mutate.transformer.engine import Limits
from mutate.v1 import events_pb2, job_pb2, public_api_pb2

from .conftest import MAX_INPUT_BYTES, Platform
from .helpers import CSV, Tenant, job_ended_by_worker

pb = public_api_pb2
Job = job_pb2.Job
Event = events_pb2.JobEvent

# What the worker reported for a 220 MB input before the limits agreed: storage
# names the object it refused by its key.
_WORKER_MESSAGE = (
    "reading the input: object 'input/{org}/{job}/big report.csv' is 230686720 "
    "bytes, over the requested limit of 209715200"
)


def test_gateway_refuses_what_the_transformer_would_by_default() -> None:
    gateway = load(GatewaySettings, {"MUTATE_DATABASE_URL": "postgresql:///x"})

    assert gateway.max_input_bytes == Limits().max_input_bytes == 200 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "public"),
    [
        (
            "object 'input/org_1/job_2/big report.csv' is 9 bytes",
            "the input file is 9 bytes",
        ),
        (
            'upload "uploads/org_1/upl_2/it\'s.csv" is 9 bytes',
            "the uploaded file is 9 bytes",
        ),
        (
            "cannot store output/org_1/job_2/out.csv: denied",
            "cannot store the output file: denied",
        ),
        ("the input/output of rule 3", "the input/output of rule 3"),
    ],
)
def test_storage_keys_become_what_the_file_is(text: str, public: str) -> None:
    assert without_storage_keys(text) == public


def test_only_the_organizations_own_keys_are_replaced() -> None:
    # What a user typed can look like a key; a real one carries the org id.
    typed = "missing required headers: output/q1/report/total"
    real = "object 'output/org_1/job_2/out.csv' could not be stored"

    assert without_storage_keys(typed, "org_1") == typed
    assert without_storage_keys(real, "org_1") == "the output file could not be stored"
    assert without_storage_keys(typed) == "missing required headers: the output file"


def test_watched_job_errors_lose_their_keys_too() -> None:
    job = Job(id="job_1")
    failed = Event(
        type=Event.FAILED,
        organization_id="org_1",
        attempt=1,
        error=job_pb2.JobError(
            message=_WORKER_MESSAGE.format(org="org_1", job="job_1")
        ),
    )

    merge_event(job, failed)

    assert job.error.message.startswith("reading the input: the input file is ")


async def test_an_upload_over_the_limit_is_refused_naming_the_limit(
    tenant: Tenant,
) -> None:
    configuration = await tenant.configuration()
    upload = await tenant.uploads.CreateUpload(
        pb.CreateUploadRequest(file_name="big.csv", content_type="text/csv"),
        metadata=tenant.metadata,
    )
    async with httpx.AsyncClient() as http:
        put = await http.put(
            upload.url,
            content=CSV * (MAX_INPUT_BYTES // len(CSV) + 1),
            headers=dict(upload.headers),
        )
    assert put.status_code == 200, put.text

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await tenant.jobs.CreateJob(
            pb.CreateJobRequest(configuration_id=configuration.id, upload_id=upload.id),
            metadata=tenant.metadata,
        )

    message = refused.value.details() or ""
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert size_text(MAX_INPUT_BYTES) in message
    assert upload.id in message
    assert "uploads/" not in message and tenant.organization_id not in message


async def test_a_job_error_never_shows_a_storage_key(
    platform: Platform, tenant: Tenant, js: Any
) -> None:
    # A later attempt failed the way a worker reports an input it refused.
    failed = await job_ended_by_worker(
        tenant,
        js,
        Event.FAILED,
        job_pb2.JobError(
            code="LIMIT_EXCEEDED",
            message=_WORKER_MESSAGE.format(org=tenant.organization_id, job="job_0"),
        ),
        status=Job.FAILED,
    )

    async with httpx.AsyncClient(
        base_url=platform.info.gateway_http_url,
        headers={"authorization": f"Bearer {tenant.key}"},
    ) as rest:
        over_rest = (await rest.get(f"/v1/jobs/{failed.id}")).json()["error"]

    expected = (
        "reading the input: the input file is 230686720 bytes, over the requested "
        "limit of 209715200"
    )
    assert failed.error.code == "LIMIT_EXCEEDED"
    assert failed.error.message == expected
    assert over_rest["message"] == expected
