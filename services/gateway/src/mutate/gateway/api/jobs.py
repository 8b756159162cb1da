"""JobService: create (inline, streamed or uploaded), read, cancel, retry,
delete, download and watch jobs."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import grpc
from google.protobuf import empty_pb2

from mutate.common.errors import FailedPrecondition, InvalidArgument, NotFound
from mutate.common.storage_client import StorageClient
from mutate.gateway import convert
from mutate.gateway.api._auth import IDEMPOTENCY_METADATA, Auth, metadata_value
from mutate.gateway.api.deliveries import DeliveryForwarder
from mutate.gateway.api.uploads import presign_lifetime
from mutate.gateway.job_store import JobFilter, JobStore
from mutate.gateway.jobs import JobManager
from mutate.gateway.public_errors import file_too_large
from mutate.gateway.settings import GatewaySettings
from mutate.v1 import job_pb2, public_api_pb2, public_api_pb2_grpc, webhook_pb2

pb = public_api_pb2


class JobServicer(public_api_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        *,
        auth: Auth,
        manager: JobManager,
        store: JobStore,
        storage: StorageClient,
        deliveries: DeliveryForwarder,
        settings: GatewaySettings,
    ) -> None:
        self._auth = auth
        self._manager = manager
        self._store = store
        self._storage = storage
        self._deliveries = deliveries
        self._settings = settings

    async def CreateJob(
        self, request: pb.CreateJobRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.Job:
        principal = await self._auth.principal(context)
        data = (
            request.file_content
            if request.WhichOneof("source") == "file_content"
            else None
        )
        return await self._manager.create(
            principal,
            request,
            data=data,
            idempotency_key=metadata_value(context, IDEMPOTENCY_METADATA),
        )

    async def UploadJob(
        self,
        request_iterator: AsyncIterator[pb.UploadJobRequest],
        context: grpc.aio.ServicerContext,
    ) -> job_pb2.Job:
        principal = await self._auth.principal(context)
        request: pb.CreateJobRequest | None = None
        buffer = bytearray()
        limit = self._settings.max_input_bytes
        async for part in request_iterator:
            if part.WhichOneof("part") == "request":
                if request is not None:
                    raise InvalidArgument(
                        "UploadJob takes one request message, first, then chunks"
                    )
                request = part.request
                if request.WhichOneof("source") is not None:
                    raise InvalidArgument(
                        "the UploadJob request must not carry file_content or "
                        "upload_id: the file follows as chunks",
                        field_violations=[("request.source", "not allowed")],
                    )
            elif part.WhichOneof("part") == "chunk":
                if request is None:
                    raise InvalidArgument(
                        "UploadJob must start with the request, then the chunks"
                    )
                buffer += part.chunk
                if len(buffer) > limit:
                    raise file_too_large(limit, field="chunk")
        if request is None:
            raise InvalidArgument("UploadJob needs a request message first")
        return await self._manager.create(
            principal,
            request,
            data=bytes(buffer),
            idempotency_key=metadata_value(context, IDEMPOTENCY_METADATA),
        )

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.Job:
        principal = await self._auth.principal(context)
        return convert.job(await self._store.get(principal.organization_id, request.id))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        principal = await self._auth.principal(context)
        if request.status and request.status not in convert.STATUS_NAMES:
            raise InvalidArgument(
                f"status {request.status} is not a job status",
                field_violations=[("status", "unknown")],
            )
        after = (
            request.created_after.ToDatetime(tzinfo=dt.UTC)
            if request.HasField("created_after")
            else None
        )
        before = (
            request.created_before.ToDatetime(tzinfo=dt.UTC)
            if request.HasField("created_before")
            else None
        )
        if after and before and after >= before:
            raise InvalidArgument(
                "created_after must be before created_before",
                field_violations=[("created_after", "not before created_before")],
            )
        rows, token = await self._store.list_jobs(
            principal.organization_id,
            JobFilter(
                status=convert.STATUS_NAMES.get(request.status, ""),
                configuration_id=request.configuration_id,
                created_after=after,
                created_before=before,
            ),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListJobsResponse(
            jobs=[convert.job(r) for r in rows], next_page_token=token
        )

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.Job:
        principal = await self._auth.principal(context)
        return await self._manager.cancel(principal, request.id)

    async def RetryJob(
        self, request: pb.RetryJobRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.Job:
        principal = await self._auth.principal(context)
        return await self._manager.retry(principal, request.id)

    async def DeleteJob(
        self, request: pb.DeleteJobRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        principal = await self._auth.principal(context)
        await self._manager.delete(principal, request.id)
        return empty_pb2.Empty()

    async def GetJobDownload(
        self, request: pb.GetJobDownloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.Download:
        principal = await self._auth.principal(context)
        row = await self._store.get(principal.organization_id, request.id)
        if row["status"] != "completed" or not row["output_key"]:
            raise FailedPrecondition(
                f"job {request.id} is {row['status']}; its output can be "
                "downloaded once it has completed",
                reason="JOB_NOT_COMPLETED",
            )
        lifetime = presign_lifetime(
            request.expires_in.ToTimedelta().total_seconds(),
            default=self._settings.download_url_ttl,
        )
        try:
            await self._storage.stat(row["output_key"])
        except NotFound:
            raise FailedPrecondition(
                f"job {request.id}'s output is no longer retained; run the job "
                "again to get it",
                reason="OUTPUT_EXPIRED",
            ) from None
        presigned = await self._storage.presign_get(
            row["output_key"],
            lifetime,
            download_file_name=row["output_file_name"],
            content_type=row["output_content_type"],
        )
        download = pb.Download(
            url=presigned.url,
            file_name=row["output_file_name"],
            bytes=row["output_bytes"],
            content_type=row["output_content_type"],
        )
        download.expire_time.FromDatetime(presigned.expires_at)
        return download

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[job_pb2.Job]:
        principal = await self._auth.principal(context)
        async for job in self._manager.watch(principal, request.id):
            yield job

    async def ListJobDeliveries(
        self, request: pb.ListJobDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeliveriesResponse:
        principal = await self._auth.principal(context)
        await self._store.get(principal.organization_id, request.id)
        reply = await self._deliveries.call(
            "ListDeliveries",
            webhook_pb2.NotifierListDeliveriesRequest(
                organization_id=principal.organization_id, job_id=request.id
            ),
        )
        return pb.ListDeliveriesResponse(
            deliveries=reply.deliveries, next_page_token=reply.next_page_token
        )
