"""ConfigurationService: saved configurations, their versions, and test runs."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from mutate.common import keys
from mutate.common.errors import InvalidArgument
from mutate.gateway.api._auth import Auth
from mutate.gateway.backends import Transformer
from mutate.gateway.configurations import Configuration, ConfigurationStore, spec_of
from mutate.gateway.jobs import check_file_type, default_file_name
from mutate.gateway.settings import GatewaySettings
from mutate.gateway.tenancy import check_name
from mutate.gateway.webhook_urls import WebhookUrlChecker
from mutate.v1 import (
    configuration_pb2,
    public_api_pb2,
    public_api_pb2_grpc,
    transformer_pb2,
)

pb = public_api_pb2
MAX_PREVIEW_ROWS = 1000


class ConfigurationServicer(public_api_pb2_grpc.ConfigurationServiceServicer):
    def __init__(
        self,
        *,
        auth: Auth,
        store: ConfigurationStore,
        transformer: Transformer,
        webhook_urls: WebhookUrlChecker,
        settings: GatewaySettings,
    ) -> None:
        self._auth = auth
        self._store = store
        self._transformer = transformer
        self._webhook_urls = webhook_urls
        self._settings = settings

    async def _validated(self, spec: Configuration) -> Configuration:
        """`spec` checked here and by the transformer, or InvalidArgument."""
        spec.name = check_name(spec.name, field="configuration.name")
        if spec.conversion_type == configuration_pb2.CONVERSION_TYPE_UNSPECIFIED:
            kinds = ", ".join(
                v.name
                for v in configuration_pb2.ConversionType.DESCRIPTOR.values
                if v.number
            )
            raise InvalidArgument(
                f"configuration.conversionType is required: one of {kinds}",
                field_violations=[("configuration.conversion_type", "required")],
            )
        spec.webhook_url = await self._webhook_urls.check(
            spec.webhook_url, field="configuration.webhook_url"
        )
        problems = await self._transformer.validate(spec)
        if problems:
            described = "; ".join(
                f"{p.field or 'configuration'}"
                + (f" (rule {p.rule_id})" if p.rule_id else "")
                + f": {p.message}"
                for p in problems
            )
            raise InvalidArgument(
                f"configuration is not valid: {described}",
                field_violations=[
                    (
                        f"configuration.{p.field}" if p.field else "configuration",
                        p.message,
                    )
                    for p in problems
                ],
                reason="INVALID_CONFIGURATION",
            )
        return spec

    async def CreateConfiguration(
        self, request: pb.CreateConfigurationRequest, context: grpc.aio.ServicerContext
    ) -> Configuration:
        principal = await self._auth.principal(context)
        if not request.HasField("configuration"):
            raise InvalidArgument(
                "configuration is required",
                field_violations=[("configuration", "required")],
            )
        spec = await self._validated(spec_of(request.configuration))
        return await self._store.create(principal.organization_id, spec)

    async def GetConfiguration(
        self, request: pb.GetConfigurationRequest, context: grpc.aio.ServicerContext
    ) -> Configuration:
        principal = await self._auth.principal(context)
        return await self._store.get(
            principal.organization_id, request.id, request.version
        )

    async def ListConfigurations(
        self, request: pb.ListConfigurationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConfigurationsResponse:
        principal = await self._auth.principal(context)
        items, token = await self._store.list_configurations(
            principal.organization_id,
            page_size=request.page_size,
            page_token=request.page_token,
            name_contains=request.name_contains,
        )
        return pb.ListConfigurationsResponse(
            configurations=items, next_page_token=token
        )

    async def UpdateConfiguration(
        self, request: pb.UpdateConfigurationRequest, context: grpc.aio.ServicerContext
    ) -> Configuration:
        principal = await self._auth.principal(context)
        if not request.configuration.id:
            raise InvalidArgument(
                "configuration.id is required",
                field_violations=[("configuration.id", "required")],
            )
        if request.expected_version < 0:
            raise InvalidArgument(
                "expected_version must not be negative",
                field_violations=[("expected_version", "negative")],
            )
        return await self._store.update(
            principal.organization_id,
            request.configuration,
            request.update_mask,
            expected_version=request.expected_version,
            validate=self._validated,
        )

    async def DeleteConfiguration(
        self, request: pb.DeleteConfigurationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        principal = await self._auth.principal(context)
        await self._store.delete(principal.organization_id, request.id)
        return empty_pb2.Empty()

    async def ListConfigurationVersions(
        self,
        request: pb.ListConfigurationVersionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.ListConfigurationVersionsResponse:
        principal = await self._auth.principal(context)
        items, token = await self._store.versions(
            principal.organization_id,
            request.id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListConfigurationVersionsResponse(
            versions=items, next_page_token=token
        )

    async def TestConfiguration(
        self, request: pb.TestConfigurationRequest, context: grpc.aio.ServicerContext
    ) -> transformer_pb2.PreviewResponse:
        principal = await self._auth.principal(context)
        configuration = await self._store.get(
            principal.organization_id, request.id, request.version
        )
        if not request.file_content:
            raise InvalidArgument(
                "file_content is required: a sample file to run the configuration on",
                field_violations=[("file_content", "required")],
            )
        limit = self._settings.sync_max_bytes
        if len(request.file_content) > limit:
            raise InvalidArgument(
                f"the sample is {len(request.file_content)} bytes; a test takes "
                f"at most {limit} bytes (cut the file down to a sample)",
                field_violations=[("file_content", "too large")],
            )
        if not 0 <= request.max_rows <= MAX_PREVIEW_ROWS:
            raise InvalidArgument(
                f"max_rows must be between 0 and {MAX_PREVIEW_ROWS}",
                field_violations=[("max_rows", "out of range")],
            )
        file_name = keys.sanitize_file_name(
            request.file_name or default_file_name(configuration)
        )
        check_file_type(file_name, configuration)
        return await self._transformer.preview(
            transformer_pb2.PreviewRequest(
                configuration=configuration,
                input_data=request.file_content,
                input_file_name=file_name,
                max_rows=request.max_rows,
            )
        )
