"""UploadService: presigned PUT URLs for files too big to send inline."""

from __future__ import annotations

import grpc

from mutate.common import keys
from mutate.common.errors import InvalidArgument
from mutate.common.storage_client import StorageClient
from mutate.gateway import ids
from mutate.gateway.api._auth import Auth
from mutate.gateway.job_store import JobStore
from mutate.gateway.settings import MAX_PRESIGN_SECONDS, GatewaySettings
from mutate.v1 import public_api_pb2, public_api_pb2_grpc

pb = public_api_pb2


def presign_lifetime(
    requested: float, *, default: float, field: str = "expires_in"
) -> float:
    """The URL lifetime to use: the request's, else the default; ≤ 7 days."""
    if requested < 0:
        raise InvalidArgument(
            f"{field} must be positive", field_violations=[(field, "negative")]
        )
    if requested > MAX_PRESIGN_SECONDS:
        raise InvalidArgument(
            f"{field} may be at most 7 days", field_violations=[(field, "over 7 days")]
        )
    return requested or default


class UploadServicer(public_api_pb2_grpc.UploadServiceServicer):
    def __init__(
        self,
        *,
        auth: Auth,
        store: JobStore,
        storage: StorageClient,
        settings: GatewaySettings,
    ) -> None:
        self._auth = auth
        self._store = store
        self._storage = storage
        self._settings = settings

    async def CreateUpload(
        self, request: pb.CreateUploadRequest, context: grpc.aio.ServicerContext
    ) -> pb.Upload:
        principal = await self._auth.principal(context)
        if not request.file_name.strip():
            raise InvalidArgument(
                "file_name is required (it decides how the file is read)",
                field_violations=[("file_name", "required")],
            )
        file_name = keys.sanitize_file_name(request.file_name)
        lifetime = presign_lifetime(
            request.expires_in.ToTimedelta().total_seconds(),
            default=self._settings.upload_url_ttl,
        )
        upload_id = ids.new_id(ids.UPLOAD)
        key = keys.upload_key(principal.organization_id, upload_id, file_name)
        presigned = await self._storage.presign_put(
            key, lifetime, content_type=request.content_type
        )
        expires_at = presigned.expires_at
        await self._store.insert_upload(
            id=upload_id,
            organization_id=principal.organization_id,
            storage_key=key,
            file_name=file_name,
            content_type=request.content_type,
            expires_at=expires_at,
        )
        upload = pb.Upload(
            id=upload_id,
            file_name=file_name,
            url=presigned.url,
            headers=dict(presigned.headers),
            max_bytes=self._settings.max_input_bytes,
        )
        upload.expire_time.FromDatetime(expires_at)
        return upload
