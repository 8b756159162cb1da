"""`MutateClient`: the public gRPC API of Mutate, one method per call.

Built directly on the generated stubs (`mutate.v1.public_api_pb2_grpc`), so
it doubles as the example of a gRPC client: the API key travels as
`authorization: Bearer …` metadata, retried creates carry one
`idempotency-key`, and errors come back as `ApiError` with the status
details decoded.
"""

from __future__ import annotations

import enum
import logging
import mimetypes
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
from google.protobuf import duration_pb2, empty_pb2, field_mask_pb2, timestamp_pb2

from mutate.client import _transfer
from mutate.client._errors import (
    ApiError,
    ClientError,
    UsageError,
    from_rpc_error,
    translated,
)
from mutate.client._retry import DEFAULT_RETRY, RetryPolicy
from mutate.v1 import (
    configuration_pb2,
    job_pb2,
    public_api_pb2,
    public_api_pb2_grpc,
    transformer_pb2,
    webhook_pb2,
)

logger = logging.getLogger(__name__)

pb = public_api_pb2
Job = job_pb2.Job
Configuration = configuration_pb2.Configuration

DEFAULT_ADDRESS = "127.0.0.1:50051"
IDEMPOTENCY_METADATA = "idempotency-key"
# The gateway accepts messages up to 64 MiB; stay well under it.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
TERMINAL_STATUSES = frozenset(
    {Job.COMPLETED, Job.FAILED, Job.CANCELLED, Job.DEAD_LETTERED}
)

Mode = Literal["auto", "sync", "async"]
_MODES: dict[str, int] = {"auto": Job.AUTO, "sync": Job.SYNC, "async": Job.ASYNC}

R = TypeVar("R")
# Called with each state of a watched job, the first one included.
JobCallback = Callable[[job_pb2.Job], None]
FileSource = Path | str | bytes


class ClientState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class WaitTimeout(ClientError):
    """The job was still running when the wait ran out; `job` is its state."""

    def __init__(self, message: str, job: job_pb2.Job) -> None:
        super().__init__(message)
        self.job = job


class MutateClient:
    """A synchronous client of the gateway's gRPC API.

    **address**: `host:port` of the gateway (`https://host[:port]` for TLS).
    **api_key**: the `mk_…` key; every call is scoped to its organization.
    **timeout**: seconds each call may take (uploads and watches excepted).
    **retries**: how calls that failed with UNAVAILABLE (or a rate limit
    with a retry delay) are retried; an int is a number of tries.
    **inline_max_bytes** / **stream_max_bytes**: files up to the first go
    inside one CreateJob; up to the second through the client-streamed
    UploadJob; larger ones through a presigned upload.

    ```python
    with MutateClient("127.0.0.1:50051", api_key) as client:
        job = client.submit("report.xlsx", configuration_id="cfg_…")
        job = client.wait(job.id)
        client.download(job.id, "report.csv")
    ```
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        api_key: str = "",
        *,
        timeout: float = 30.0,
        retries: RetryPolicy | int = DEFAULT_RETRY,
        tls: bool | None = None,
        inline_max_bytes: int = 4 * 1024 * 1024,
        stream_max_bytes: int = 48 * 1024 * 1024,
        chunk_bytes: int = 1024 * 1024,
        transfer_timeout: float = 300.0,
        settle_timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(retries, int):
            retries = RetryPolicy(attempts=retries)
        self.address, use_tls = _parse_address(address, tls)
        self.timeout = timeout
        self.retries = retries
        self.inline_max_bytes = inline_max_bytes
        self.stream_max_bytes = min(stream_max_bytes, MAX_MESSAGE_BYTES)
        self.chunk_bytes = chunk_bytes
        self.transfer_timeout = transfer_timeout
        self.settle_timeout = settle_timeout
        self._sleep = sleep
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if use_tls:
            credentials = grpc.ssl_channel_credentials()
            self._channel = grpc.secure_channel(self.address, credentials, options)
        else:
            self._channel = grpc.insecure_channel(self.address, options)
        self.configurations = public_api_pb2_grpc.ConfigurationServiceStub(
            self._channel
        )
        self.jobs = public_api_pb2_grpc.JobServiceStub(self._channel)
        self.uploads = public_api_pb2_grpc.UploadServiceStub(self._channel)
        self.deliveries = public_api_pb2_grpc.DeliveryServiceStub(self._channel)
        self.api_keys = public_api_pb2_grpc.ApiKeyServiceStub(self._channel)
        self.queue = public_api_pb2_grpc.QueueServiceStub(self._channel)
        self.state = ClientState.OPEN

    def close(self) -> None:
        if self.state is ClientState.OPEN:
            self.state = ClientState.CLOSED
            self._channel.close()

    def __enter__(self) -> MutateClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # Never the API key.
        return f"MutateClient(address={self.address!r}, state={self.state.value})"

    # ------------------------------------------------------------ calling

    def _call(
        self,
        method: Callable[..., Any],
        response_type: type[R],
        request: Any,
        *,
        idempotent: bool = True,
        idempotency_key: str = "",
        timeout: float | None = None,
    ) -> R:
        """Call a unary (or stream-unary) method with auth and retries.

        `request` may be a callable returning a fresh request iterator, for
        client-streamed calls that must be replayed on a retry. Calls that
        are not idempotent are tried once.
        """
        if self.state is ClientState.CLOSED:
            raise ClientError("the client is closed")
        metadata = self._metadata
        if idempotency_key:
            metadata += ((IDEMPOTENCY_METADATA, idempotency_key),)
        tries = 0
        while True:
            tries += 1
            body = request() if callable(request) else request
            try:
                response = method(
                    body, metadata=metadata, timeout=timeout or self.timeout
                )
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if not idempotent or not self.retries.should_retry(error, tries=tries):
                    raise error from exc
                delay = self.retries.delay(tries, error)
                logger.warning(
                    "call failed, retrying in %.2fs: %s",
                    delay,
                    error.code.name,
                    extra={"address": self.address, "try": tries},
                )
                self._sleep(delay)
                continue
            if not isinstance(response, response_type):
                raise ClientError(
                    f"expected a {response_type.__name__}, got {type(response)!r}"
                )
            return response

    # ------------------------------------------------------------ configurations

    def create_configuration(
        self, configuration: configuration_pb2.Configuration
    ) -> configuration_pb2.Configuration:
        return self._call(
            self.configurations.CreateConfiguration,
            configuration_pb2.Configuration,
            pb.CreateConfigurationRequest(configuration=configuration),
            idempotent=False,
        )

    def get_configuration(
        self, configuration_id: str, *, version: int = 0
    ) -> configuration_pb2.Configuration:
        return self._call(
            self.configurations.GetConfiguration,
            configuration_pb2.Configuration,
            pb.GetConfigurationRequest(id=configuration_id, version=version),
        )

    def list_configurations(
        self, *, page_size: int = 0, page_token: str = "", name_contains: str = ""
    ) -> pb.ListConfigurationsResponse:
        return self._call(
            self.configurations.ListConfigurations,
            pb.ListConfigurationsResponse,
            pb.ListConfigurationsRequest(
                page_size=page_size, page_token=page_token, name_contains=name_contains
            ),
        )

    def update_configuration(
        self,
        configuration_id: str,
        configuration: configuration_pb2.Configuration,
        *,
        update_mask: Sequence[str] = (),
        expected_version: int = 0,
    ) -> configuration_pb2.Configuration:
        """Replace the fields in `update_mask` (all writable ones if empty).

        With `expected_version`, a concurrent edit makes it fail (ABORTED)
        instead of being overwritten.
        """
        body = configuration_pb2.Configuration()
        body.CopyFrom(configuration)
        body.id = configuration_id
        request = pb.UpdateConfigurationRequest(
            configuration=body,
            update_mask=field_mask_pb2.FieldMask(paths=list(update_mask)),
            expected_version=expected_version,
        )
        # Without an expected version a replayed update could bump the
        # version twice; with one, a replay is refused rather than doubled.
        return self._call(
            self.configurations.UpdateConfiguration,
            configuration_pb2.Configuration,
            request,
            idempotent=expected_version > 0,
        )

    def delete_configuration(self, configuration_id: str) -> None:
        self._call(
            self.configurations.DeleteConfiguration,
            empty_pb2.Empty,
            pb.DeleteConfigurationRequest(id=configuration_id),
        )

    def list_configuration_versions(
        self, configuration_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListConfigurationVersionsResponse:
        return self._call(
            self.configurations.ListConfigurationVersions,
            pb.ListConfigurationVersionsResponse,
            pb.ListConfigurationVersionsRequest(
                id=configuration_id, page_size=page_size, page_token=page_token
            ),
        )

    def test_configuration(
        self,
        configuration_id: str,
        sample: FileSource,
        *,
        file_name: str = "",
        max_rows: int = 0,
        version: int = 0,
    ) -> transformer_pb2.PreviewResponse:
        """Run the configuration on a sample file; no job is created."""
        data, name = _read_source(sample, file_name)
        return self._call(
            self.configurations.TestConfiguration,
            transformer_pb2.PreviewResponse,
            pb.TestConfigurationRequest(
                id=configuration_id,
                file_content=data,
                file_name=name,
                max_rows=max_rows,
                version=version,
            ),
        )

    # ------------------------------------------------------------ jobs

    def submit(
        self,
        source: FileSource,
        configuration_id: str,
        *,
        file_name: str = "",
        configuration_version: int = 0,
        mode: Mode = "auto",
        webhook_url: str = "",
        client_reference: str = "",
        idempotency_key: str = "",
    ) -> job_pb2.Job:
        """Create a job from a file path or bytes.

        Small files travel inline, larger ones through the client-streamed
        UploadJob, the largest through a presigned upload. One idempotency
        key (generated unless given) covers every retry, so a retried submit
        never makes two jobs.
        """
        if mode not in _MODES:
            raise UsageError(f"mode must be one of {', '.join(_MODES)}, not {mode!r}")
        request = pb.CreateJobRequest(
            configuration_id=configuration_id,
            configuration_version=configuration_version,
            mode=_MODES[mode],  # type: ignore[arg-type]
            webhook_url=webhook_url,
            client_reference=client_reference,
        )
        key = idempotency_key or f"mutate-client-{uuid.uuid4()}"
        if isinstance(source, bytes):
            if not file_name:
                raise UsageError("file_name is required when submitting bytes")
            request.file_name = file_name
            return self._submit_bytes(request, source, key)
        path = Path(source)
        request.file_name = file_name or path.name
        size = _file_size(path)
        if size <= self.inline_max_bytes:
            return self._submit_bytes(request, path.read_bytes(), key)
        if size <= self.stream_max_bytes:
            return self._submit_streamed(request, lambda: _file_chunks(path, self), key)
        return self._submit_uploaded(request, path, key)

    def _submit_bytes(
        self, request: pb.CreateJobRequest, data: bytes, key: str
    ) -> job_pb2.Job:
        if len(data) > self.stream_max_bytes:
            raise UsageError(
                f"{len(data)} bytes is too much to send from memory; "
                "submit a file path instead (it goes through a presigned upload)"
            )
        if len(data) > self.inline_max_bytes:
            chunks = [
                data[i : i + self.chunk_bytes]
                for i in range(0, len(data), self.chunk_bytes)
            ]
            return self._submit_streamed(request, lambda: iter(chunks), key)
        request.file_content = data
        return self._call(
            self.jobs.CreateJob, job_pb2.Job, request, idempotency_key=key
        )

    def _submit_streamed(
        self,
        request: pb.CreateJobRequest,
        chunks: Callable[[], Iterator[bytes]],
        key: str,
    ) -> job_pb2.Job:
        def messages() -> Iterator[pb.UploadJobRequest]:
            yield pb.UploadJobRequest(request=request)
            for chunk in chunks():
                yield pb.UploadJobRequest(chunk=chunk)

        return self._call(
            self.jobs.UploadJob,
            job_pb2.Job,
            messages,
            idempotency_key=key,
            timeout=self.transfer_timeout,
        )

    def _submit_uploaded(
        self, request: pb.CreateJobRequest, path: Path, key: str
    ) -> job_pb2.Job:
        upload = self.create_upload(request.file_name)
        size = _file_size(path)
        if upload.max_bytes and size > upload.max_bytes:
            raise UsageError(
                f"{path.name} is {size} bytes; the gateway accepts at most "
                f"{upload.max_bytes}"
            )
        _transfer.put_file(
            upload.url,
            path,
            headers=dict(upload.headers),
            timeout=self.transfer_timeout,
        )
        request.upload_id = upload.id
        return self._call(
            self.jobs.CreateJob, job_pb2.Job, request, idempotency_key=key
        )

    def create_upload(
        self, file_name: str, *, content_type: str = "", expires_in: float = 0
    ) -> pb.Upload:
        """A presigned PUT URL; use its `id` as `upload_id` of a job."""
        request = pb.CreateUploadRequest(
            file_name=file_name,
            content_type=content_type or _content_type(file_name),
            expires_in=_duration(expires_in),
        )
        # A second upload slot is harmless (it expires unused), so retry.
        return self._call(self.uploads.CreateUpload, pb.Upload, request)

    def get_job(self, job_id: str) -> job_pb2.Job:
        return self._call(self.jobs.GetJob, job_pb2.Job, pb.GetJobRequest(id=job_id))

    def list_jobs(
        self,
        *,
        status: int = 0,
        configuration_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        created_after: timestamp_pb2.Timestamp | None = None,
        created_before: timestamp_pb2.Timestamp | None = None,
    ) -> pb.ListJobsResponse:
        request = pb.ListJobsRequest(
            status=status,  # type: ignore[arg-type]
            configuration_id=configuration_id,
            page_size=page_size,
            page_token=page_token,
        )
        if created_after is not None:
            request.created_after.CopyFrom(created_after)
        if created_before is not None:
            request.created_before.CopyFrom(created_before)
        return self._call(self.jobs.ListJobs, pb.ListJobsResponse, request)

    def cancel_job(self, job_id: str) -> job_pb2.Job:
        return self._call(
            self.jobs.CancelJob, job_pb2.Job, pb.CancelJobRequest(id=job_id)
        )

    def retry_job(self, job_id: str) -> job_pb2.Job:
        # A replayed retry would start a second attempt: tried once.
        return self._call(
            self.jobs.RetryJob,
            job_pb2.Job,
            pb.RetryJobRequest(id=job_id),
            idempotent=False,
        )

    def delete_job(self, job_id: str) -> None:
        self._call(self.jobs.DeleteJob, empty_pb2.Empty, pb.DeleteJobRequest(id=job_id))

    def list_job_deliveries(self, job_id: str) -> pb.ListDeliveriesResponse:
        return self._call(
            self.jobs.ListJobDeliveries,
            pb.ListDeliveriesResponse,
            pb.ListJobDeliveriesRequest(id=job_id),
        )

    def get_download(self, job_id: str, *, expires_in: float = 0) -> pb.Download:
        """A fresh presigned URL of a completed job's output."""
        return self._call(
            self.jobs.GetJobDownload,
            pb.Download,
            pb.GetJobDownloadRequest(id=job_id, expires_in=_duration(expires_in)),
        )

    def download(
        self,
        job_id: str,
        destination: Path | str | None = None,
        *,
        directory: Path | str = ".",
        on_progress: _transfer.ByteProgress | None = None,
    ) -> Path:
        """Save a completed job's output; returns where it was written.

        Without `destination`, the output's own file name in `directory`.
        """
        # Before any call: a folder or a missing folder is the caller's
        # mistake, found before a URL is made for nothing.
        if destination is not None:
            _transfer.check_destination(Path(destination))
        elif not Path(directory).is_dir():
            raise UsageError(f"cannot save into {directory}: no such folder")
        download = self.get_download(job_id)
        if destination is None:
            target = _unused_path(
                Path(directory) / safe_file_name(download.file_name, job_id)
            )
        else:
            target = Path(destination)
        _transfer.get_file(
            download.url,
            target,
            timeout=self.transfer_timeout,
            on_progress=on_progress,
        )
        return target

    # ------------------------------------------------------------ watching

    def watch(
        self, job_id: str, *, timeout: float | None = None
    ) -> Iterator[job_pb2.Job]:
        """The job's state now, then each change, until it ends.

        A broken stream is reopened (the first message of a new stream is
        the current state, so nothing is missed). Raises `WaitTimeout`
        after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: job_pb2.Job | None = None
        failures = 0
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise _wait_timeout(job_id, last, timeout)
            try:
                for job in self._watch_stream(job_id, remaining):
                    failures = 0
                    last = job
                    yield job
                    if job.status in TERMINAL_STATUSES:
                        return
                # The server ended the stream early (e.g. a replica stopping).
                error: ApiError | None = None
            except ApiError as exc:
                if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline:
                    raise _wait_timeout(job_id, last, timeout) from exc
                error = exc
            failures += 1
            if error is not None and not self.retries.should_retry(
                error, tries=failures
            ):
                raise error
            if error is None and failures >= self.retries.attempts + 1:
                raise ClientError(f"the watch of job {job_id} keeps ending early")
            self._sleep(self.retries.delay(failures, error))

    def _watch_stream(
        self, job_id: str, timeout: float | None
    ) -> Iterator[job_pb2.Job]:
        call = self.jobs.WatchJob(
            pb.WatchJobRequest(id=job_id), metadata=self._metadata, timeout=timeout
        )
        try:
            with translated():
                yield from call
        finally:
            call.cancel()

    def wait(
        self,
        job_id: str,
        *,
        on_update: JobCallback | None = None,
        timeout: float | None = None,
    ) -> job_pb2.Job:
        """Block until the job ends; returns its final state."""
        final: job_pb2.Job | None = None
        for job in self.watch(job_id, timeout=timeout):
            final = job
            if on_update is not None:
                on_update(job)
        assert final is not None  # watch yields at least once or raises
        self._settle(final)
        return final

    def _settle(self, final: job_pb2.Job) -> None:
        """Wait until GetJob (and so GetJobDownload) agrees with the watch.

        A safety net: the gateway's WatchJob now ends only on a terminal
        state its job row already has (tests/gateway/test_watch.py), so this
        returns after one GetJob. Kept for older gateways, whose watch could
        report COMPLETED before the row (a download then was refused with
        JOB_NOT_COMPLETED); it polls the row for a bounded time.
        """
        deadline = time.monotonic() + self.settle_timeout
        delay = 0.05
        while time.monotonic() < deadline:
            current = self.get_job(final.id)
            if current.attempt > final.attempt or (
                current.attempt == final.attempt and current.status == final.status
            ):
                return
            self._sleep(delay)
            delay = min(delay * 2, 1.0)
        logger.warning(
            "job row still behind its watch",
            extra={"job_id": final.id, "status": final.status},
        )

    # ------------------------------------------------------------ webhooks

    def list_deliveries(
        self,
        *,
        status: int = 0,
        since: timestamp_pb2.Timestamp | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListDeliveriesResponse:
        request = pb.ListDeliveriesRequest(
            status=status,  # type: ignore[arg-type]
            page_size=page_size,
            page_token=page_token,
        )
        if since is not None:
            request.since.CopyFrom(since)
        return self._call(
            self.deliveries.ListDeliveries, pb.ListDeliveriesResponse, request
        )

    def redeliver(self, delivery_id: str) -> webhook_pb2.Delivery:
        return self._call(
            self.deliveries.RedeliverDelivery,
            webhook_pb2.Delivery,
            pb.RedeliverDeliveryRequest(id=delivery_id),
            idempotent=False,
        )

    def send_test_webhook(self, url: str) -> webhook_pb2.Delivery:
        return self._call(
            self.deliveries.SendTestWebhook,
            webhook_pb2.Delivery,
            pb.SendTestWebhookRequest(url=url),
            idempotent=False,
        )

    def rotate_webhook_secret(self, *, overlap: float = 0) -> webhook_pb2.SigningSecret:
        return self._call(
            self.deliveries.RotateWebhookSecret,
            webhook_pb2.SigningSecret,
            pb.RotateWebhookSecretRequest(overlap=_duration(overlap)),
            idempotent=False,
        )

    # ------------------------------------------------------------ keys and queue

    def list_api_keys(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListApiKeysResponse:
        return self._call(
            self.api_keys.ListApiKeys,
            pb.ListApiKeysResponse,
            pb.ListApiKeysRequest(page_size=page_size, page_token=page_token),
        )

    def create_api_key(self, name: str) -> pb.CreateApiKeyResponse:
        return self._call(
            self.api_keys.CreateApiKey,
            pb.CreateApiKeyResponse,
            pb.CreateApiKeyRequest(name=name),
            idempotent=False,
        )

    def revoke_api_key(self, key_id: str) -> pb.ApiKey:
        return self._call(
            self.api_keys.RevokeApiKey, pb.ApiKey, pb.RevokeApiKeyRequest(id=key_id)
        )

    def queue_stats(self) -> pb.QueueStats:
        return self._call(
            self.queue.GetQueueStats, pb.QueueStats, pb.GetQueueStatsRequest()
        )

    def list_dead_letters(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListJobsResponse:
        return self._call(
            self.queue.ListDeadLetters,
            pb.ListJobsResponse,
            pb.ListDeadLettersRequest(page_size=page_size, page_token=page_token),
        )

    def redrive_dead_letters(
        self, job_ids: Iterable[str] = ()
    ) -> pb.RedriveDeadLettersResponse:
        return self._call(
            self.queue.RedriveDeadLetters,
            pb.RedriveDeadLettersResponse,
            pb.RedriveDeadLettersRequest(job_ids=list(job_ids)),
            idempotent=False,
        )


# ------------------------------------------------------------ helpers


def _parse_address(address: str, tls: bool | None) -> tuple[str, bool]:
    """`host:port` and whether to use TLS, from an address or URL-ish form."""
    if address.startswith("https://"):
        target, use_tls = address.removeprefix("https://"), True
        if ":" not in target.rsplit("]", 1)[-1]:
            target += ":443"
    elif address.startswith("http://"):
        target, use_tls = address.removeprefix("http://"), False
    else:
        target, use_tls = address, False
    target = target.rstrip("/")
    if not target:
        raise UsageError("the gateway address is empty")
    return target, use_tls if tls is None else tls


def _read_source(source: FileSource, file_name: str) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        if not file_name:
            raise UsageError("file_name is required with bytes")
        return source, file_name
    path = Path(source)
    _file_size(path)
    return path.read_bytes(), file_name or path.name


def _file_size(path: Path) -> int:
    try:
        stat = path.stat()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    return stat.st_size


def _file_chunks(path: Path, client: MutateClient) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(client.chunk_bytes):
            yield chunk


def _content_type(file_name: str) -> str:
    guessed, _ = mimetypes.guess_type(file_name)
    return guessed or "application/octet-stream"


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    if seconds:
        duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def _wait_timeout(
    job_id: str, last: job_pb2.Job | None, timeout: float | None
) -> WaitTimeout:
    job = last if last is not None else job_pb2.Job(id=job_id)
    return WaitTimeout(f"job {job_id} still not finished after {timeout:g}s", job)


def _unused_path(path: Path) -> Path:
    """`path`, or `name (1).ext`, `name (2).ext`… when a file is there.

    A name the user did not choose must not replace a file: a CSV-to-CSV
    output is named as its input, and saving it into the input's folder
    would overwrite the input.
    """
    candidate, number = path, 1
    while candidate.exists() or candidate.is_symlink():
        candidate = path.with_name(f"{path.stem} ({number}){path.suffix}")
        number += 1
    return candidate


def safe_file_name(name: str, fallback: str) -> str:
    """A bare file name from a server-provided one: never a path elsewhere."""
    base = Path(name.replace("\\", "/")).name
    if base in ("", ".", ".."):
        return fallback
    return base
