"""The client retries a gateway's DEADLINE_EXCEEDED on idempotent calls.

Found by test_s3_stopped_for_ten_seconds: while S3 restarted, the gateway's
call to storage timed out and it answered DEADLINE_EXCEEDED ("storage:
Deadline Exceeded"); the client gave up on a CreateJob that carried an
idempotency key and could safely have been sent again.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from mutate.client import ApiError, MutateClient, RetryPolicy
from mutate.v1 import configuration_pb2, job_pb2, public_api_pb2_grpc


class FlakyGateway(
    public_api_pb2_grpc.JobServiceServicer,
    public_api_pb2_grpc.ConfigurationServiceServicer,
):
    """Answers DEADLINE_EXCEEDED `failures` times, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.keys: list[str] = []
        self.creates = 0

    def CreateJob(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.keys.append(dict(context.invocation_metadata()).get("idempotency-key", ""))
        if len(self.keys) <= self.failures:
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "storage: Deadline Exceeded"
            )
        return job_pb2.Job(id="job_1", status=job_pb2.Job.PENDING)

    def CreateConfiguration(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.creates += 1
        context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED, "transformer: Deadline Exceeded"
        )


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyGateway, str]]:
    servicer = FlakyGateway(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    public_api_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    public_api_pb2_grpc.add_ConfigurationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def test_deadline_exceeded_is_retried_with_the_same_idempotency_key(
    flaky: tuple[FlakyGateway, str],
) -> None:
    servicer, address = flaky
    retries = RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.02)
    with MutateClient(address, "mk_test", retries=retries) as client:
        job = client.submit(b"a\n1\n", "cfg_1", file_name="a.csv")
        assert job.id == "job_1"
        assert len(servicer.keys) == 3
        assert len(set(servicer.keys)) == 1 and servicer.keys[0]
        # A call that is not idempotent is still tried once.
        with pytest.raises(ApiError) as info:
            client.create_configuration(configuration_pb2.Configuration(name="x"))
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert servicer.creates == 1
