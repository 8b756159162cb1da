"""`mutate.v1.TransformerService`: the engine behind gRPC, for the gateway.

`Transform` converts a file of at most `MUTATE_SYNC_MAX_BYTES` and stores the
result; `ValidateConfiguration` and `Preview` need no storage. The engine
always runs in the process pool. The caller's deadline bounds the engine
(the conversion is asked to stop when the call is cancelled or its deadline
passes). A file the engine cannot convert is not an RPC error: the response
carries `error`. Faults of the service itself (storage down, the pool broken)
are raised as `mutate.common.errors` and mapped to status codes by the
server's interceptor.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import grpc

from mutate.common import errors, keys
from mutate.transformer.pool import (
    ConvertOutcome,
    ConvertTask,
    EngineCrashed,
    EngineFailure,
    EnginePool,
    EngineTimeout,
)
from mutate.transformer.storage import Storage, output_key_for, put_file
from mutate.v1 import (
    job_pb2,
    transformer_pb2,
    transformer_pb2_grpc,
)

logger = logging.getLogger(__name__)

SERVICE_NAME = "mutate.v1.TransformerService"

DEFAULT_PREVIEW_ROWS = 20
MAX_PREVIEW_ROWS = 1000

# Time kept back from the caller's deadline to store the output and answer.
_DEADLINE_MARGIN = 0.05


class TransformerService(transformer_pb2_grpc.TransformerServiceServicer):
    """Synchronous conversions, validation and previews."""

    def __init__(
        self,
        *,
        pool: EnginePool,
        storage: Storage,
        sync_max_bytes: int,
        engine_timeout: float,
        work_dir: str = "",
    ) -> None:
        self._pool = pool
        self._storage = storage
        self._sync_max_bytes = sync_max_bytes
        self._engine_timeout = engine_timeout
        self._work_dir = Path(work_dir or tempfile.gettempdir())

    async def Transform(
        self,
        request: transformer_pb2.TransformRequest,
        context: grpc.aio.ServicerContext,
    ) -> transformer_pb2.TransformResponse:
        if not request.HasField("configuration"):
            raise errors.InvalidArgument(
                "configuration is required",
                field_violations=[("configuration", "missing")],
            )
        data = await self._input(request)
        output_key = self._output_key(request)
        timeout = self._engine_budget(context)
        response = transformer_pb2.TransformResponse(input_bytes=len(data))
        output_path = self._work_dir / f"mutate-sync-{self._pool.new_token()}.out"
        try:
            outcome = await self._convert(request, data, output_path, timeout)
            if isinstance(outcome, job_pb2.JobError):
                response.error.CopyFrom(outcome)
                return response
            response.execution_log.extend(outcome.log_entries())
            response.warnings.extend(outcome.warnings)
            response.engine_ms = outcome.engine_seconds * 1000
            error = outcome.job_error()
            if error is not None:
                response.error.CopyFrom(error)
                return response
            output = await self._store(request, output_key, output_path, outcome)
        finally:
            output_path.unlink(missing_ok=True)
        response.output.CopyFrom(output)
        return response

    async def _convert(
        self,
        request: transformer_pb2.TransformRequest,
        data: bytes,
        output_path: Path,
        timeout: float,
    ) -> ConvertOutcome | job_pb2.JobError:
        task = ConvertTask(
            configuration=request.configuration.SerializeToString(),
            data=data,
            file_name=request.input_file_name,
            output_path=str(output_path),
        )
        try:
            outcome = await self._pool.convert(
                task, token=self._pool.new_token(), timeout=timeout
            )
        except EngineTimeout as exc:
            if timeout < self._engine_timeout:
                raise errors.DeadlineExceeded(
                    f"the deadline passed while converting: {exc}"
                ) from exc
            # Too slow to convert is a property of the file, like a bad one.
            return job_pb2.JobError(
                code="LIMIT_EXCEEDED", message=f"{exc} (MUTATE_ENGINE_TIMEOUT_MS)"
            )
        except (EngineCrashed, EngineFailure) as exc:
            raise _pool_error(exc) from exc
        if outcome.cancelled:
            raise errors.DeadlineExceeded("the conversion was stopped")
        return outcome

    async def _store(
        self,
        request: transformer_pb2.TransformRequest,
        output_key: str,
        output_path: Path,
        outcome: ConvertOutcome,
    ) -> job_pb2.JobOutput:
        key = output_key or output_key_for(
            request.organization_id,
            request.job_id,
            request.input_file_name,
            outcome.file_extension,
        )
        info = await put_file(
            self._storage,
            key,
            output_path,
            content_type=outcome.content_type,
            metadata={"job-id": request.job_id} if request.job_id else None,
        )
        return job_pb2.JobOutput(
            key=key,
            file_name=key.rsplit("/", 1)[-1],
            content_type=outcome.content_type,
            bytes=info.size,
            rows=outcome.rows,
            columns=outcome.columns,
            sha256=info.sha256,
        )

    async def ValidateConfiguration(
        self,
        request: transformer_pb2.ValidateConfigurationRequest,
        context: grpc.aio.ServicerContext,
    ) -> transformer_pb2.ValidateConfigurationResponse:
        try:
            problems = await self._pool.validate(
                request.configuration, timeout=self._engine_budget(context)
            )
        except (EngineCrashed, EngineTimeout, EngineFailure) as exc:
            raise _pool_error(exc) from exc
        return transformer_pb2.ValidateConfigurationResponse(problems=problems)

    async def Preview(
        self,
        request: transformer_pb2.PreviewRequest,
        context: grpc.aio.ServicerContext,
    ) -> transformer_pb2.PreviewResponse:
        self._check_size(len(request.input_data))
        if not request.input_data:
            raise errors.InvalidArgument(
                "input_data is required",
                field_violations=[("input_data", "empty")],
            )
        if not 0 <= request.max_rows <= MAX_PREVIEW_ROWS:
            raise errors.InvalidArgument(
                f"max_rows must be between 0 and {MAX_PREVIEW_ROWS}",
                field_violations=[("max_rows", f"at most {MAX_PREVIEW_ROWS}")],
            )
        try:
            return await self._pool.preview(
                request.configuration,
                request.input_data,
                request.input_file_name,
                max_rows=request.max_rows or DEFAULT_PREVIEW_ROWS,
                timeout=self._engine_budget(context),
            )
        except (EngineCrashed, EngineTimeout, EngineFailure) as exc:
            raise _pool_error(exc) from exc

    # --- helpers ----------------------------------------------------------------

    async def _input(self, request: transformer_pb2.TransformRequest) -> bytes:
        which = request.WhichOneof("input")
        if which == "input_data":
            self._check_size(len(request.input_data))
            return request.input_data
        if which == "input_key":
            info = await self._storage.stat(request.input_key)
            self._check_size(info.size)
            return await self._storage.get_bytes(
                request.input_key, max_bytes=self._sync_max_bytes
            )
        raise errors.InvalidArgument(
            "input_data or input_key is required",
            field_violations=[("input", "neither input_data nor input_key set")],
        )

    def _check_size(self, size: int) -> None:
        if size > self._sync_max_bytes:
            raise errors.FailedPrecondition(
                f"the input is {size} bytes, over the synchronous limit of "
                f"{self._sync_max_bytes} bytes (MUTATE_SYNC_MAX_BYTES); "
                "queue the job instead",
                reason="INPUT_TOO_LARGE_FOR_SYNC",
            )

    @staticmethod
    def _output_key(request: transformer_pb2.TransformRequest) -> str:
        if request.output_key:
            keys.parse_key(request.output_key)
            return request.output_key
        if request.job_id and request.organization_id:
            return ""  # derived once the engine names the extension
        raise errors.InvalidArgument(
            "output_key (or job_id and organization_id) is required",
            field_violations=[("output_key", "missing")],
        )

    def _engine_budget(self, context: grpc.aio.ServicerContext) -> float:
        remaining: float | None = context.time_remaining()
        if remaining is None:
            return self._engine_timeout
        budget = remaining - _DEADLINE_MARGIN
        if budget <= 0:
            raise errors.DeadlineExceeded("the deadline passed before the conversion")
        return min(self._engine_timeout, budget)


def _pool_error(exc: Exception) -> errors.MutateError:
    """The one translation of engine-pool faults into domain errors."""
    if isinstance(exc, EngineCrashed):
        return errors.Unavailable(f"transformer: {exc}", retry_after=1.0)
    if isinstance(exc, EngineTimeout):
        return errors.DeadlineExceeded(f"the deadline passed: {exc}")
    return errors.Internal(f"the conversion engine failed: {exc}")
