"""`MutateClient` call behaviour against a scripted in-process gRPC server.

The server is a real grpc server on 127.0.0.1 whose JobService answers as
each test scripts it, to reach what a healthy gateway rarely does: broken
connections, broken watch streams, status details.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from mutate.client import (
    ApiError,
    AuthError,
    MutateClient,
    NotFoundError,
    RetryPolicy,
    UnavailableError,
    UsageError,
)
from mutate.v1 import job_pb2, public_api_pb2, public_api_pb2_grpc

Job = job_pb2.Job
pb = public_api_pb2


class ScriptedJobs(public_api_pb2_grpc.JobServiceServicer):
    """Fails the first `failures` calls of each method with `code`."""

    def __init__(self) -> None:
        self.failures = 0
        self.code = grpc.StatusCode.UNAVAILABLE
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.uploaded = b""
        self.watch_script: list[list[Job]] = []
        self.row_lag = 0
        self._lock = threading.Lock()

    def _record(self, name: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls.append((name, dict(context.invocation_metadata())))
            failing = self.failures > 0
            self.failures -= 1
        if failing:
            context.abort(self.code, f"scripted {self.code.name}")

    def CreateJob(self, request: Any, context: grpc.ServicerContext) -> Job:
        self._record("CreateJob", context)
        return Job(
            id="job_1", status=Job.PENDING, input_bytes=len(request.file_content)
        )

    def UploadJob(self, request_iterator: Any, context: grpc.ServicerContext) -> Job:
        parts = list(request_iterator)
        self._record("UploadJob", context)
        self.uploaded = b"".join(p.chunk for p in parts[1:])
        return Job(id="job_2", input_file_name=parts[0].request.file_name)

    def RetryJob(self, request: Any, context: grpc.ServicerContext) -> Job:
        self._record("RetryJob", context)
        return Job(id=request.id, attempt=2)

    def GetJob(self, request: Any, context: grpc.ServicerContext) -> Job:
        self._record("GetJob", context)
        if request.id == "job_missing":
            status = status_pb2.Status(code=5, message="job job_missing not found")
            info = any_pb2.Any()
            info.Pack(error_details_pb2.ErrorInfo(reason="JOB_NOT_FOUND"))
            bad = any_pb2.Any()
            bad.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="id", description="unknown"
                        )
                    ]
                )
            )
            status.details.extend([info, bad])
            context.set_trailing_metadata(
                (("grpc-status-details-bin", status.SerializeToString()),)
            )
            context.abort(grpc.StatusCode.NOT_FOUND, "job job_missing not found")
        with self._lock:
            lagging = self.row_lag > 0
            self.row_lag -= 1
        # The job row may trail the watch (see MutateClient._settle).
        return Job(
            id=request.id, status=Job.RUNNING if lagging else Job.COMPLETED, attempt=1
        )

    def WatchJob(self, request: Any, context: grpc.ServicerContext) -> Iterator[Job]:
        self._record("WatchJob", context)
        script = self.watch_script.pop(0)
        yield from script
        if script[-1].status not in (Job.COMPLETED, Job.FAILED):
            context.abort(grpc.StatusCode.UNAVAILABLE, "replica stopping")


@pytest.fixture
def jobs() -> Iterator[tuple[ScriptedJobs, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = ScriptedJobs()
    public_api_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


def client_for(address: str, **kwargs: Any) -> MutateClient:
    sleeps: list[float] = []
    client = MutateClient(
        address,
        "mk_secret",
        retries=RetryPolicy(attempts=4, initial_backoff=0.01),
        sleep=sleeps.append,
        **kwargs,
    )
    client.sleeps = sleeps  # type: ignore[attr-defined]
    return client


def test_submit_retries_unavailable_with_one_idempotency_key(
    jobs: tuple[ScriptedJobs, str],
) -> None:
    servicer, address = jobs
    servicer.failures = 2
    with client_for(address) as client:
        job = client.submit(b"a,b\n1,2\n", "cfg_1", file_name="x.csv")

    assert job.id == "job_1" and job.input_bytes == 8
    keys = {metadata["idempotency-key"] for _, metadata in servicer.calls}
    assert len(servicer.calls) == 3 and len(keys) == 1
    assert all(m["authorization"] == "Bearer mk_secret" for _, m in servicer.calls)
    assert len(client.sleeps) == 2  # type: ignore[attr-defined]


def test_retries_give_up_with_unavailable(jobs: tuple[ScriptedJobs, str]) -> None:
    servicer, address = jobs
    servicer.failures = 10
    with client_for(address) as client, pytest.raises(UnavailableError):
        client.get_job("job_1")

    assert len(servicer.calls) == 4


def test_non_idempotent_call_is_tried_once(jobs: tuple[ScriptedJobs, str]) -> None:
    servicer, address = jobs
    servicer.failures = 1
    with client_for(address) as client, pytest.raises(UnavailableError):
        client.retry_job("job_1")

    assert len(servicer.calls) == 1


def test_auth_errors_are_not_retried(jobs: tuple[ScriptedJobs, str]) -> None:
    servicer, address = jobs
    servicer.failures = 1
    servicer.code = grpc.StatusCode.UNAUTHENTICATED
    with client_for(address) as client, pytest.raises(AuthError):
        client.get_job("job_1")

    assert len(servicer.calls) == 1


def test_status_details_are_decoded(jobs: tuple[ScriptedJobs, str]) -> None:
    _, address = jobs
    with client_for(address) as client, pytest.raises(NotFoundError) as caught:
        client.get_job("job_missing")

    error = caught.value
    assert isinstance(error, ApiError) and error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "JOB_NOT_FOUND"
    assert error.field_violations == (("id", "unknown"),)
    assert str(error).startswith("NOT_FOUND: job job_missing not found [JOB_NOT_FOUND]")


def test_larger_files_are_streamed_in_chunks_and_replayed_on_retry(
    jobs: tuple[ScriptedJobs, str], tmp_path: Any
) -> None:
    servicer, address = jobs
    servicer.failures = 1
    data = bytes(range(256)) * 40
    path = tmp_path / "big.csv"
    path.write_bytes(data)
    with client_for(address, inline_max_bytes=1000, chunk_bytes=999) as client:
        job = client.submit(path, "cfg_1")

    assert job.id == "job_2" and job.input_file_name == "big.csv"
    assert servicer.uploaded == data
    assert [name for name, _ in servicer.calls] == ["UploadJob", "UploadJob"]


def test_watch_reopens_a_broken_stream(jobs: tuple[ScriptedJobs, str]) -> None:
    servicer, address = jobs
    servicer.watch_script = [
        [Job(id="job_1", status=Job.PENDING), Job(id="job_1", status=Job.RUNNING)],
        [
            Job(id="job_1", status=Job.RUNNING, progress_percent=50),
            Job(id="job_1", status=Job.COMPLETED, attempt=1),
        ],
    ]
    servicer.row_lag = 2
    seen: list[tuple[int, int]] = []
    with client_for(address) as client:
        final = client.wait(
            "job_1", on_update=lambda j: seen.append((j.status, j.progress_percent))
        )

    assert final.status == Job.COMPLETED
    assert seen == [(1, 0), (2, 0), (2, 50), (3, 0)]
    names = [name for name, _ in servicer.calls]
    assert names.count("WatchJob") == 2
    # wait() returns once GetJob agrees, so a download right after works.
    assert names.count("GetJob") == 3


def test_closed_client_refuses_calls(jobs: tuple[ScriptedJobs, str]) -> None:
    _, address = jobs
    client = client_for(address)
    client.close()

    with pytest.raises(Exception, match="closed"):
        client.get_job("job_1")
    assert "mk_secret" not in repr(client)


@pytest.mark.parametrize(
    "where",
    [
        {"destination": "nowhere/x.csv"},
        {"destination": "."},
        {"directory": "nowhere"},
    ],
)
def test_a_download_destination_is_checked_before_any_call(
    jobs: tuple[ScriptedJobs, str], tmp_path: Path, where: dict[str, str]
) -> None:
    servicer, address = jobs
    in_tmp = {key: tmp_path / value for key, value in where.items()}
    with client_for(address) as client, pytest.raises(UsageError):
        client.download("job_1", **in_tmp)  # type: ignore[arg-type]
    assert servicer.calls == []
    assert list(tmp_path.iterdir()) == []
