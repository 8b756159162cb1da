"""Creating and running jobs: the synchronous and queued paths, cancel, retry.

Order of writes, so nothing is half-written: the input is stored first, then
the job row is inserted, then the job is handed on (a JetStream publish). A
job row therefore always has its input, and a published job always has its
row. A row whose hand-over failed (NATS down, or this replica died
mid-request) keeps `dispatched_at` empty and is queued by the sweeper after
MUTATE_REQUEUE_AFTER_MS. The synchronous path stores the input while the
transformer converts it, then inserts the row already finished, in one
statement, answers, and publishes its terminal event (for webhooks) right
after; a failure before that insert leaves no job (see `_create_sync`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator

import nats.errors
import nats.js.errors
from google.protobuf import timestamp_pb2
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from mutate.common import keys, messaging, topology
from mutate.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from mutate.common.logs import job_context
from mutate.common.storage_client import StorageClient
from mutate.common.telemetry import NOOP_METRICS, Metrics
from mutate.gateway import convert, ids
from mutate.gateway.backends import Transformer
from mutate.gateway.configurations import ConfigurationStore
from mutate.gateway.db import Database, Row
from mutate.gateway.job_store import (
    JobStore,
    NewJob,
    check_idempotency_key,
)
from mutate.gateway.projection import (
    GATEWAY_WORKER_ID,
    RANKS,
    TERMINAL_RANK,
    apply_event,
    count_finished,
    merge_event,
    moves_forward,
)
from mutate.gateway.public_errors import file_too_large, public_job_error
from mutate.gateway.settings import GatewaySettings
from mutate.gateway.tenancy import Principal
from mutate.gateway.webhook_urls import WebhookUrlChecker
from mutate.v1 import (
    configuration_pb2,
    events_pb2,
    job_pb2,
    public_api_pb2,
    transformer_pb2,
)

logger = logging.getLogger(__name__)

Configuration = configuration_pb2.Configuration
JobEvent = events_pb2.JobEvent
MAX_CLIENT_REFERENCE = 1024
# Each try is bounded by MUTATE_NATS_PUBLISH_TIMEOUT_MS.
_BACKGROUND_PUBLISH_TRIES = 2
# Room left under the NATS max_payload for a job request's headers.
_HEADER_ROOM = 4096

_CT = configuration_pb2.ConversionType
# Input extensions by the kind of file a conversion reads.
_INPUT_KINDS: dict[str, frozenset[str]] = {
    "xlsx": frozenset({".xlsx", ".xlsm"}),
    "csv": frozenset({".csv", ".tsv", ".txt"}),
    "json": frozenset({".json", ".ndjson", ".jsonl"}),
}
_READS: dict[int, str] = {
    _CT.XLSX_TO_CSV: "xlsx",
    _CT.XLSX_TO_JSON: "xlsx",
    _CT.CSV_TO_CSV: "csv",
    _CT.CSV_TO_JSON: "csv",
    _CT.JSON_TO_CSV: "json",
}
_CONTENT_TYPES = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv",
    "json": "application/json",
}
_OF = configuration_pb2.OutputFormat
_OUTPUT_EXTENSIONS: dict[int, str] = {
    _OF.CSV: ".csv",
    _OF.JSON: ".json",
    _OF.NDJSON: ".ndjson",
}
_WRITES: dict[int, str] = {
    _CT.XLSX_TO_CSV: ".csv",
    _CT.XLSX_TO_JSON: ".json",
    _CT.CSV_TO_CSV: ".csv",
    _CT.CSV_TO_JSON: ".json",
    _CT.JSON_TO_CSV: ".csv",
}


def input_kind(configuration: Configuration) -> str:
    return _READS.get(configuration.conversion_type, "")


def check_file_type(file_name: str, configuration: Configuration) -> None:
    """Refuse a file whose extension says it is another kind than expected."""
    kind = input_kind(configuration)
    extension = os.path.splitext(file_name)[1].lower()
    if not kind or not extension:
        return
    for other, extensions in _INPUT_KINDS.items():
        if other != kind and extension in extensions:
            raise InvalidArgument(
                f"file {file_name!r} looks like {other.upper()}, but configuration "
                f"{configuration.id} converts {kind.upper()} files "
                f"({_CT.Name(configuration.conversion_type)})",
                field_violations=[("file_name", f"expected a {kind} file")],
                reason="WRONG_FILE_TYPE",
            )


def default_file_name(configuration: Configuration) -> str:
    kind = input_kind(configuration) or "dat"
    return f"input.{kind}"


def output_file_name(input_file_name: str, configuration: Configuration) -> str:
    extension = _OUTPUT_EXTENSIONS.get(configuration.output_format.type) or _WRITES.get(
        configuration.conversion_type, ".csv"
    )
    stem = os.path.splitext(input_file_name)[0] or "output"
    return keys.sanitize_file_name(stem + extension)


def request_fingerprint(
    request: public_api_pb2.CreateJobRequest, data: bytes | None
) -> bytes:
    """What makes two CreateJob requests "the same" for an idempotency key."""
    shape = public_api_pb2.CreateJobRequest()
    shape.CopyFrom(request)
    shape.ClearField("idempotency_key")
    shape.ClearField("file_content")
    digest = hashlib.sha256(shape.SerializeToString(deterministic=True))
    digest.update(b"\x00")
    digest.update(hashlib.sha256(data).digest() if data is not None else b"-")
    return digest.digest()


@dataclasses.dataclass(frozen=True)
class Messaging:
    """JetStream handles the job paths publish to."""

    js: JetStreamContext
    cancellations: KeyValue
    publish_timeout: float
    # The NATS server's largest message (0: unknown, not checked).
    max_payload: int = 0


class JobManager:
    """Everything that creates or moves a job, shared by RPCs and the sweeper."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        db: Database,
        store: JobStore,
        configurations: ConfigurationStore,
        storage: StorageClient,
        transformer: Transformer,
        messaging: Messaging,
        webhook_urls: WebhookUrlChecker,
        metrics: Metrics = NOOP_METRICS,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._db = db
        self._store = store
        self._configurations = configurations
        self._storage = storage
        self._transformer = transformer
        self._messaging = messaging
        self._webhook_urls = webhook_urls
        self._sync_slots = asyncio.Semaphore(settings.sync_concurrency)
        # Terminal events of synchronous jobs, published after the answer.
        self._publishing: set[asyncio.Task[None]] = set()
        # Key bookkeeping retried after a database outage (see _settle_key).
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ create

    async def create(
        self,
        principal: Principal,
        request: public_api_pb2.CreateJobRequest,
        *,
        data: bytes | None,
        idempotency_key: str = "",
    ) -> job_pb2.Job:
        """Create (and for the sync path, run) a job.

        `data` is the file for inline and streamed requests, None for an
        upload. `idempotency_key` comes from metadata; the request field is
        the other way to send it.
        """
        organization_id = principal.organization_id
        self._check_request(request, data)
        key = self._idempotency_key(request, idempotency_key)
        if not key:
            return await self._create(organization_id, request, data, key="")
        claim = await self._store.claim_idempotency_key(
            organization_id,
            key,
            request_fingerprint(request, data),
            ttl=self._settings.idempotency_ttl,
            stale_after=self._settings.idempotency_wait,
        )
        if not claim.owner:
            return await self._wait_for_first(organization_id, key)
        try:
            job = await self._create(organization_id, request, data, key=key)
        except BaseException:
            # Released when no job was made (a retry may try again), done
            # when one was (a retry gets that job).
            await self._settle_key(organization_id, key)
            raise
        await self._settle_key(organization_id, key)
        return job

    async def _settle_key(self, organization_id: str, key: str) -> None:
        """Close the key's claim; while the database is away, keep trying.

        An unsettled claim holds every retry with the key in
        `_wait_for_first` for MUTATE_IDEMPOTENCY_WAIT_MS, past any client's
        deadline (or, with its job made, until the key expires). The request
        itself is answered at once either way.
        """
        try:
            await asyncio.shield(
                self._store.settle_idempotency_key(organization_id, key)
            )
        except Exception as exc:
            logger.warning(
                "idempotency key not settled; retrying in the background",
                extra={"error": repr(exc)},
            )
            task = asyncio.create_task(self._settle_key_later(organization_id, key))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _settle_key_later(self, organization_id: str, key: str) -> None:
        # Half the wait: a stale claim may be taken over after the full one.
        deadline = time.monotonic() + self._settings.idempotency_wait / 2
        delay = 0.05
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.sweep_interval)
            try:
                await self._store.settle_idempotency_key(organization_id, key)
            except Exception as exc:
                logger.debug("idempotency key still not settled: %r", exc)
                continue
            logger.info("idempotency key settled late")
            return
        logger.warning("idempotency key left to go stale")

    def _check_request(
        self, request: public_api_pb2.CreateJobRequest, data: bytes | None
    ) -> None:
        if not request.configuration_id:
            raise InvalidArgument(
                "configuration_id is required",
                field_violations=[("configuration_id", "required")],
            )
        if request.configuration_version < 0:
            raise InvalidArgument(
                "configuration_version must not be negative",
                field_violations=[("configuration_version", "negative")],
            )
        if data is None and not request.upload_id:
            raise InvalidArgument(
                "a file is required: send file_content, an upload_id from "
                "CreateUpload, or stream it with UploadJob (multipart on REST)",
                field_violations=[("file_content", "required")],
                reason="FILE_MISSING",
            )
        if data is not None:
            self._check_size(len(data), mode=request.mode, what="file")
        if request.mode not in convert.MODE_NAMES and request.mode != 0:
            raise InvalidArgument(
                f"mode {request.mode} is not one of AUTO, SYNC, ASYNC",
                field_violations=[("mode", "unknown")],
            )
        if len(request.client_reference) > MAX_CLIENT_REFERENCE:
            raise InvalidArgument(
                f"client_reference is longer than {MAX_CLIENT_REFERENCE} characters",
                field_violations=[("client_reference", "too long")],
            )

    def _check_size(self, size: int, *, mode: int, what: str) -> None:
        if size == 0:
            raise InvalidArgument(
                f"the {what} is empty; send a file with content",
                field_violations=[("file_content", "empty")],
                reason="EMPTY_FILE",  # the engine's code for the same (docs)
            )
        if size > self._settings.max_input_bytes:
            raise file_too_large(
                self._settings.max_input_bytes,
                field="file_content",
                what=what,
                size=size,
            )
        if mode == job_pb2.Job.SYNC and size > self._settings.sync_max_bytes:
            raise FailedPrecondition(
                f"the {what} is {size} bytes, over the synchronous limit of "
                f"{self._settings.sync_max_bytes} bytes; use mode AUTO or ASYNC",
                reason="TOO_LARGE_FOR_SYNC",
            )

    @staticmethod
    def _idempotency_key(
        request: public_api_pb2.CreateJobRequest, from_metadata: str
    ) -> str:
        header = check_idempotency_key(from_metadata)
        body = check_idempotency_key(request.idempotency_key)
        if header and body and header != body:
            raise InvalidArgument(
                "the idempotency-key header and the idempotency_key field differ; "
                "send one of them",
                field_violations=[("idempotency_key", "differs from header")],
            )
        return header or body

    async def _wait_for_first(self, organization_id: str, key: str) -> job_pb2.Job:
        """Answer a duplicate with the first request's job once it is made."""
        deadline = time.monotonic() + self._settings.idempotency_wait
        delay = 0.01
        while True:
            row = await self._store.idempotency_state(organization_id, key)
            if row is not None and row["job_id"] and row["state"] == "done":
                try:
                    return convert.job(
                        await self._store.get(organization_id, row["job_id"])
                    )
                except NotFound:
                    raise NotFound(
                        f"the job created with idempotency key {key!r} was deleted"
                    ) from None
            if row is None:
                raise Unavailable(
                    f"the first request with idempotency key {key!r} failed; "
                    "send the request again"
                )
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"a request with idempotency key {key!r} is still running; "
                    "try again later"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _create(
        self,
        organization_id: str,
        request: public_api_pb2.CreateJobRequest,
        data: bytes | None,
        *,
        key: str,
    ) -> job_pb2.Job:
        created_at = dt.datetime.now(dt.UTC)
        mode = request.mode or job_pb2.Job.AUTO
        configuration = await self._configurations.get(
            organization_id, request.configuration_id, request.configuration_version
        )
        webhook_url = await self._webhook_urls.check(request.webhook_url)
        if mode != job_pb2.Job.SYNC:
            # A SYNC job never waits in the queue: the queue's limit is not its.
            await self._check_queue_limit(organization_id)
        job_id = ids.new_id(ids.JOB)
        upload_id: str | None = None
        if data is not None:
            file_name = keys.sanitize_file_name(
                request.file_name or default_file_name(configuration)
            )
            check_file_type(file_name, configuration)
            input_key = keys.input_key(organization_id, job_id, file_name)
            size = len(data)
        else:
            upload = await self._store.get_upload(organization_id, request.upload_id)
            upload_id = upload["id"]
            file_name = upload["file_name"]
            input_key = upload["storage_key"]
            check_file_type(file_name, configuration)
            size = await self._upload_size(upload)
            self._check_size(size, mode=mode, what=f"upload {upload_id}")
        new = NewJob(
            id=job_id,
            organization_id=organization_id,
            configuration_id=configuration.id,
            configuration_version=configuration.version,
            mode=convert.MODE_NAMES[mode],
            input_key=input_key,
            input_file_name=file_name,
            input_bytes=size,
            upload_id=upload_id,
            webhook_url=webhook_url or configuration.webhook_url,
            client_reference=request.client_reference,
        )
        with job_context(job_id):
            sync = mode == job_pb2.Job.SYNC or (
                mode == job_pb2.Job.AUTO and size <= self._settings.sync_max_bytes
            )
            # Busy in AUTO mode: the queue absorbs the load instead of this
            # replica. (No await between this check and taking a slot.)
            if sync and not (mode == job_pb2.Job.AUTO and self._sync_slots.locked()):
                return await self._create_sync(
                    new, configuration, data, mode=mode, key=key, created_at=created_at
                )
            if data is not None:
                await self._store_input(new, configuration, data)
            try:
                row = await self._store.insert(new, idempotency_key=key)
            except BaseException:
                if data is not None:
                    await self._forget_input(input_key)
                raise
            return convert.job(await self.dispatch(row, configuration, data=data))

    async def _store_input(
        self, new: NewJob, configuration: Configuration, data: bytes
    ) -> None:
        await self._storage.put_bytes(
            new.input_key,
            data,
            _CONTENT_TYPES.get(input_kind(configuration), ""),
            max_bytes=self._settings.max_input_bytes,
        )

    async def _upload_size(self, upload: Row) -> int:
        """The uploaded file's size; one over the limit is deleted and refused."""
        limit = self._settings.max_input_bytes
        try:
            info = await self._storage.verify_upload(
                upload["storage_key"], max_bytes=limit
            )
        except NotFound:
            raise FailedPrecondition(
                f"upload {upload['id']} has no file yet: PUT the file to the "
                "upload's URL first (or the upload expired)",
                reason="UPLOAD_EMPTY",
            ) from None
        except FailedPrecondition:
            # Asked without content types, storage refuses (and deletes) an
            # upload only for its size; its message names the storage key.
            raise file_too_large(
                limit, field="upload_id", what=f"file of upload {upload['id']}"
            ) from None
        return int(info.size)

    async def _forget_input(self, input_key: str) -> None:
        try:
            await asyncio.shield(self._storage.delete(input_key))
        except Exception:
            logger.warning(
                "could not delete the input of a job that was not created",
                extra={"key": input_key},
                exc_info=True,
            )

    async def _check_queue_limit(self, organization_id: str) -> None:
        limit = self._settings.max_queued_jobs
        if limit and await self._store.count_active(organization_id) >= limit:
            raise ResourceExhausted(
                f"this organization has {limit} pending or running jobs, the "
                "most allowed; wait for some to finish",
                retry_after=5.0,
                reason="TOO_MANY_QUEUED_JOBS",
            )

    # ------------------------------------------------------------ run

    def _job_request(
        self, row: Row, configuration: Configuration, data: bytes | None
    ) -> events_pb2.JobRequest:
        request = events_pb2.JobRequest(
            job_id=row["id"],
            organization_id=row["organization_id"],
            attempt=row["attempt"],
            configuration=configuration,
            input_key=row["input_key"],
            input_file_name=row["input_file_name"],
            input_bytes=row["input_bytes"],
            output_key=self._output_key(row, configuration),
            webhook_url=row["webhook_url"],
            client_reference=row["client_reference"],
        )
        request.create_time.FromDatetime(row["created_at"])
        if data is not None and len(data) <= self._settings.inline_input_max_bytes:
            request.input_data = data
            limit = self._messaging.max_payload
            if limit and request.ByteSize() + _HEADER_ROOM > limit:
                request.ClearField("input_data")
        return request

    @staticmethod
    def _output_key(row: Row, configuration: Configuration) -> str:
        return keys.output_key(
            row["organization_id"],
            row["id"],
            output_file_name(row["input_file_name"], configuration),
        )

    async def dispatch(
        self, row: Row, configuration: Configuration, *, data: bytes | None = None
    ) -> Row:
        """Queue the row's current attempt; a failed publish is left to the sweeper.

        `data`, the stored input when the caller has it in hand, travels in
        the request if small (MUTATE_INLINE_INPUT_MAX_BYTES): the worker need
        not read it back from storage.
        """
        request = self._job_request(row, configuration, data)
        try:
            await messaging.publish_job_request(
                self._messaging.js, request, timeout=self._messaging.publish_timeout
            )
        except (TimeoutError, nats.errors.Error) as exc:
            logger.warning(
                "job request not published; the sweeper will queue it",
                extra={
                    "job_id": row["id"],
                    "attempt": row["attempt"],
                    "error": repr(exc),
                },
            )
            return row
        await self._store.mark_dispatched(row["id"], row["attempt"])
        logger.info(
            "job queued", extra={"job_id": row["id"], "attempt": row["attempt"]}
        )
        return row

    async def _create_sync(
        self,
        new: NewJob,
        configuration: Configuration,
        data: bytes | None,
        *,
        mode: int,
        key: str,
        created_at: dt.datetime,
    ) -> job_pb2.Job:
        """Run a job at once; its row is written once, already finished.

        An inline input is stored while the transformer converts the same
        bytes (they travel in the request), so storing it adds no time. The
        row is inserted only after both, in one statement with the outcome:
        a job row always has its input (a retry needs it) and is never seen
        half-done. When the input cannot be stored, or anything else fails
        before the row, no job exists: its files are removed (kept when the
        insert's outcome is unknown) and the caller gets the error. In AUTO
        mode an unreachable transformer sends the job to the queue instead,
        as a pending row. The terminal event is published once the row is
        in, without holding the answer for it.
        """
        draft: Row = {**dataclasses.asdict(new), "attempt": 1, "created_at": created_at}
        stored: asyncio.Task[None] | None = None
        if data is not None:
            stored = asyncio.create_task(self._store_input(new, configuration, data))
        started = messaging.now_timestamp()
        try:
            response = await self._transform(draft, configuration, data, mode=mode)
            if stored is not None:
                await stored
        except BaseException:
            await self._discard(new, stored)
            raise
        # TODO: an idempotency key's claim names no job until this insert; a
        # duplicate takes a claim over after MUTATE_IDEMPOTENCY_WAIT_MS, which
        # must stay above MUTATE_TRANSFORM_TIMEOUT_MS (it does by default), or
        # a slow job could be made twice. Not checked by the settings yet.
        event = None
        try:
            if response is None:
                row = await self._store.insert(new, idempotency_key=key)
            else:
                event = self._outcome_event(draft, response, started)
                row = await self._store.insert_finished(
                    new, event, created_at=created_at, idempotency_key=key
                )
        except (Unavailable, asyncio.CancelledError):
            # The row may be written all the same (a lost connection can
            # hide a commit): keep its files; unused ones expire.
            raise
        except BaseException:
            await self._discard(new, stored)
            raise
        if event is None:
            return convert.job(await self.dispatch(row, configuration, data=data))
        count_finished(self._metrics, row, mode="sync")
        self._publish_later(event)
        # The log and error as the event has them: the same messages the
        # row's JSON would parse back to, without parsing it.
        job = convert.job({**row, "execution_log": (), "error": None})
        job.execution_log.extend(event.execution_log)
        if event.HasField("error"):
            job.error.CopyFrom(event.error)
        return job

    async def _transform(
        self,
        row: Row,
        configuration: Configuration,
        data: bytes | None,
        *,
        mode: int,
    ) -> transformer_pb2.TransformResponse | None:
        """The transformer's answer; None when it is unreachable in AUTO mode."""
        request = transformer_pb2.TransformRequest(
            job_id=row["id"],
            organization_id=row["organization_id"],
            attempt=row["attempt"],
            configuration=configuration,
            input_file_name=row["input_file_name"],
            output_key=self._output_key(row, configuration),
        )
        if data is not None:
            request.input_data = data
        else:
            request.input_key = row["input_key"]
        try:
            async with self._sync_slots:
                return await self._transformer.transform(request)
        except (Unavailable, DeadlineExceeded) as exc:
            if mode == job_pb2.Job.AUTO:
                logger.warning(
                    "transformer unreachable; job sent to the queue",
                    extra={"job_id": row["id"], "error": exc.message},
                )
                return None
            return transformer_pb2.TransformResponse(
                error=job_pb2.JobError(
                    code="TRANSFORMER_UNAVAILABLE",
                    message=f"the conversion service could not be reached: "
                    f"{exc.message}",
                    retryable=True,
                )
            )

    def _outcome_event(
        self,
        row: Row,
        response: transformer_pb2.TransformResponse,
        started: timestamp_pb2.Timestamp,
    ) -> JobEvent:
        event = self._event(row, JobEvent.FAILED)
        event.start_time.CopyFrom(started)
        if response.HasField("output") and not response.HasField("error"):
            event.type = JobEvent.COMPLETED
            event.output.CopyFrom(response.output)
        else:
            event.error.CopyFrom(response.error)
            if not event.error.code:
                event.error.code = "CONVERSION_FAILED"
            # Before it is stored, answered and sent to webhooks.
            public_job_error(event.error, event.organization_id)
        event.execution_log.extend(response.execution_log)
        event.warnings.extend(response.warnings)
        return event

    async def _discard(self, new: NewJob, stored: asyncio.Task[None] | None) -> None:
        """Remove the files of a synchronous job that was not created."""
        try:
            await asyncio.shield(self._remove_files(new, stored))
        except Exception:
            logger.warning(
                "could not delete the files of a job that was not created",
                extra={"job_id": new.id, "key": new.input_key},
                exc_info=True,
            )

    async def _remove_files(
        self, new: NewJob, stored: asyncio.Task[None] | None
    ) -> None:
        if stored is not None:
            # Deleting before the put ends could leave its object behind.
            await asyncio.wait([stored])
            if not stored.cancelled() and stored.exception() is not None:
                logger.debug("input not stored", exc_info=stored.exception())
            await self._storage.delete(new.input_key)
        # The transformer may have stored the output before the call failed.
        await self._storage.delete_prefix(
            keys.job_prefix(keys.Area.OUTPUT, new.organization_id, new.id)
        )

    def _event(self, row: Row, event_type: int) -> JobEvent:
        event = JobEvent(
            type=event_type,  # type: ignore[arg-type]
            job_id=row["id"],
            organization_id=row["organization_id"],
            attempt=row["attempt"],
            configuration_id=row["configuration_id"],
            configuration_version=row["configuration_version"],
            webhook_url=row["webhook_url"],
            client_reference=row["client_reference"],
            worker_id=GATEWAY_WORKER_ID,
        )
        event.time.GetCurrentTime()
        return event

    async def record(self, event: JobEvent, row: Row, *, mode: str = "") -> Row:
        """Apply an event the gateway itself produced, then publish it.

        The row is written first so the answer reflects it; the event then
        reaches the notifier (webhooks) and watchers. The projector skips it
        (its worker id is GATEWAY_WORKER_ID).
        """
        async with self._db.connection() as conn:
            updated = await apply_event(conn, event)
        if updated is not None:
            count_finished(self._metrics, updated, mode=mode)
        await self._publish(event)
        if updated is None:
            return await self._store.get(row["organization_id"], row["id"])
        return updated

    async def _publish(self, event: JobEvent, *, tries: int = 1) -> None:
        """Publish an event the gateway made (after its row has it).

        A repeated try is safe: JetStream drops a duplicate of the event.
        """
        for attempt in range(1, tries + 1):
            try:
                await messaging.publish_event(
                    self._messaging.js, event, timeout=self._messaging.publish_timeout
                )
                return
            except (TimeoutError, nats.errors.Error) as exc:
                if attempt < tries:
                    continue
                # TODO: an outbox for gateway-made events; today a lost publish
                # means no webhook for this event (the job row is right).
                logger.warning(
                    "job event not published",
                    extra={"job_id": event.job_id, "error": repr(exc)},
                )

    def _publish_later(self, event: JobEvent) -> None:
        """Publish off the response path: the answer need not wait for the
        ack, the webhook follows a moment later. `drain` bounds it on
        shutdown."""
        task = asyncio.create_task(
            self._publish(event, tries=_BACKGROUND_PUBLISH_TRIES),
            name=f"publish {event.job_id}",
        )
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for events still being published."""
        pending = set(self._publishing)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            logger.warning(
                "job events not published before shutdown",
                extra={"count": len(late)},
            )

    # ------------------------------------------------------------ cancel, retry, delete

    async def cancel(self, principal: Principal, job_id: str) -> job_pb2.Job:
        row = await self._store.get(principal.organization_id, job_id)
        if row["status"] not in convert.ACTIVE_STATUSES:
            raise FailedPrecondition(
                f"job {job_id} is {row['status']}; only pending or running jobs "
                "can be cancelled",
                reason="JOB_NOT_ACTIVE",
            )
        await self._mark_cancelled(row)
        return convert.job(await self.record(self._event(row, JobEvent.CANCELLED), row))

    async def _mark_cancelled(self, row: Row) -> None:
        try:
            await self._messaging.cancellations.put(
                topology.cancellation_key(row["id"], row["attempt"]), b"cancelled"
            )
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable("cannot reach the queue to cancel the job") from exc

    async def retry(
        self, principal: Principal, job_id: str, *, organization_id: str | None = None
    ) -> job_pb2.Job:
        """Run a failed, cancelled or dead-lettered job again as a new attempt."""
        org = organization_id or principal.organization_id
        row = await self._store.get(org, job_id)
        if row["status"] not in convert.RETRYABLE_STATUSES:
            raise FailedPrecondition(
                f"job {job_id} is {row['status']}; only failed, cancelled or "
                "dead-lettered jobs can be retried",
                reason="JOB_NOT_RETRYABLE",
            )
        configuration = await self._configurations.get_any(
            row["configuration_id"], row["configuration_version"]
        )
        try:
            await self._storage.stat(row["input_key"])
        except NotFound:
            raise FailedPrecondition(
                f"job {job_id}'s input is no longer retained; create a new job",
                reason="INPUT_EXPIRED",
            ) from None
        await self._check_queue_limit(org)
        updated = await self._store.new_attempt(
            org, job_id, statuses=convert.RETRYABLE_STATUSES
        )
        if updated is None:
            current = await self._store.get(org, job_id)
            raise FailedPrecondition(
                f"job {job_id} is {current['status']}; it changed while retrying",
                reason="JOB_NOT_RETRYABLE",
            )
        with job_context(job_id):
            logger.info("job retried", extra={"attempt": updated["attempt"]})
            return convert.job(await self.dispatch(updated, configuration))

    async def delete(self, principal: Principal, job_id: str) -> None:
        org = principal.organization_id
        row = await self._store.get(org, job_id)
        if row["status"] in convert.ACTIVE_STATUSES:
            # Stop a worker that holds it; its events then find no row.
            await self._mark_cancelled(row)
        # Files first: if storage is down the call fails and can be repeated.
        await self._storage.delete_prefix(
            keys.job_prefix(keys.Area.OUTPUT, org, job_id)
        )
        if row["upload_id"] is None:
            await self._storage.delete_prefix(
                keys.job_prefix(keys.Area.INPUT, org, job_id)
            )
        await self._store.delete(org, job_id)
        if row["upload_id"] is not None and not await self._store.input_key_in_use(
            row["input_key"]
        ):
            await self._storage.delete(row["input_key"])
        logger.info("job deleted", extra={"job_id": job_id})

    # ------------------------------------------------------------ watch

    async def watch(
        self, principal: Principal, job_id: str
    ) -> AsyncIterator[job_pb2.Job]:
        """The job now, then each change until it ends.

        Follows the job's events with a short-lived ordered consumer, so any
        replica can serve the watch whichever replica or worker moves the job;
        the row is re-read every MUTATE_WATCH_POLL_MS for changes that have no
        event of their own (a retry) or whose event was missed. Started and
        progress updates come from the events; a terminal state only once the
        row has it, so GetJob and GetJobDownload agree with the watch's end.
        """
        org = principal.organization_id
        row = await self._store.get(org, job_id)
        state = (row["attempt"], row["event_rank"], row["progress_percent"])
        job = convert.job(row)
        yield job
        if row["status"] in convert.TERMINAL_STATUSES:
            return
        subscription = await self._messaging.js.subscribe(
            topology.job_events_filter(org, job_id), ordered_consumer=True
        )
        try:
            while job.status not in _TERMINAL_VALUES:
                try:
                    msg = await subscription.next_msg(
                        timeout=self._settings.watch_poll_interval
                    )
                except (nats.errors.TimeoutError, TimeoutError):
                    fresh = await self._store.find(job_id, org)
                    if fresh is None:
                        raise NotFound(f"job {job_id} was deleted") from None
                    fresh_state = (
                        fresh["attempt"],
                        fresh["event_rank"],
                        fresh["progress_percent"],
                    )
                    if fresh_state > state:
                        state, job = fresh_state, convert.job(fresh)
                        yield job
                    continue
                event = messaging.decode_event(msg)
                if not moves_forward(
                    attempt=state[0], rank=state[1], percent=state[2], event=event
                ):
                    continue
                if RANKS[event.type] == TERMINAL_RANK:
                    # A terminal state is shown from the row, never from the
                    # event alone: a client that downloads right after the
                    # watch ends must find the row completed. Until the
                    # projector writes it, the poll above picks it up later.
                    settled = await self._settled_row(org, job_id, event)
                    if settled is not None:
                        state = (
                            settled["attempt"],
                            settled["event_rank"],
                            settled["progress_percent"],
                        )
                        job = convert.job(settled)
                        yield job
                    continue
                merge_event(job, event)
                state = (event.attempt, RANKS[event.type], job.progress_percent)
                yield job
        finally:
            try:
                await subscription.unsubscribe()
            except nats.errors.Error:
                logger.debug("watch subscription already gone")

    async def _settled_row(self, org: str, job_id: str, event: JobEvent) -> Row | None:
        """The job row once it holds `event`'s attempt ending, or None.

        Re-reads quickly for at most one MUTATE_WATCH_POLL_MS (the projector
        is usually milliseconds behind the event); None leaves it to the
        watch's regular poll.
        """
        deadline = time.monotonic() + self._settings.watch_poll_interval
        delay = 0.005
        while True:
            row = await self._store.find(job_id, org)
            if row is None:
                raise NotFound(f"job {job_id} was deleted")
            if row["attempt"] > event.attempt or (
                row["attempt"] == event.attempt and row["event_rank"] >= TERMINAL_RANK
            ):
                return row
            if time.monotonic() + delay > deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)


_TERMINAL_VALUES = frozenset(
    convert.STATUS_VALUES[s] for s in convert.TERMINAL_STATUSES
)
