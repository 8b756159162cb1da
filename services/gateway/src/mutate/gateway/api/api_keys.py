"""ApiKeyService: an organization's keys, listed, created and revoked."""

from __future__ import annotations

import grpc

from mutate.gateway import convert
from mutate.gateway.api._auth import Auth
from mutate.gateway.tenancy import TenancyStore
from mutate.v1 import public_api_pb2, public_api_pb2_grpc

pb = public_api_pb2


class ApiKeyServicer(public_api_pb2_grpc.ApiKeyServiceServicer):
    def __init__(self, *, auth: Auth, tenancy: TenancyStore) -> None:
        self._auth = auth
        self._tenancy = tenancy

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListApiKeysResponse:
        principal = await self._auth.principal(context)
        rows, token = await self._tenancy.list_api_keys(
            principal.organization_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListApiKeysResponse(
            api_keys=[convert.api_key(r) for r in rows], next_page_token=token
        )

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        principal = await self._auth.principal(context)
        # Keys made through the API never carry the operator scope: only the
        # admin command grants it.
        row, secret = await self._tenancy.create_api_key(
            principal.organization_id, request.name
        )
        return pb.CreateApiKeyResponse(api_key=convert.api_key(row), secret=secret)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApiKey:
        principal = await self._auth.principal(context)
        row = await self._tenancy.revoke_api_key(principal.organization_id, request.id)
        self._auth.authenticator.forget(row["id"])
        return convert.api_key(row)
