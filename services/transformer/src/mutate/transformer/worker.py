"""The queue worker: pulls job requests from JetStream and runs them.

One `Worker` per replica binds to the shared durable pull consumer of the
job-request stream (work-queue retention: each request goes to one replica)
and runs up to `concurrency` jobs at once. A delivery goes:

1. past the delivery limit? publish `dead_lettered` with the last known error
   (from the job-errors bucket) and terminate; it is never run again;
2. cancelled (cancellation bucket)? publish `cancelled` and ack;
3. publish `started`; take the input from the request (small ones travel
   inline) or fetch it through storage; convert in the engine
   pool while a heartbeat task sends in-progress acks, `progress` events and
   watches for a cancellation; store the output under its deterministic key;
4. publish `completed` and ack.

Faults (see `faults`): transient ones nak with a delay that grows with the
delivery count (dead-lettering at once on the last allowed delivery);
permanent ones publish `failed` and terminate; a cancellation publishes
`cancelled`. Events are de-duplicated by `{job}.{attempt}.{type}`, so a
delivery repeated after a crash publishes nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from mutate.common import errors, logs, messaging, topology
from mutate.common.telemetry import (
    NOOP_METRICS,
    Metrics,
    consumer_span,
    message_age,
)
from mutate.transformer.faults import (
    Interrupted,
    JobCancelled,
    JobFault,
    PermanentFault,
    TransientFault,
    faults_of,
)
from mutate.transformer.pool import ConvertTask, EnginePool
from mutate.transformer.storage import Storage, output_key_for, put_file
from mutate.v1 import events_pb2, job_pb2

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("mutate.transformer.worker")

_KV_OPERATION = "KV-Operation"


class WorkerState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """The worker's knobs, taken from `TransformerSettings` by `main`."""

    worker_id: str
    concurrency: int
    fetch_batch: int
    fetch_timeout: float
    delivery_limit: int
    ack_wait: float
    heartbeat_fraction: float
    progress_interval: float
    engine_timeout: float
    engine_kill_grace: float
    publish_timeout: float
    nak_delay: float
    nak_delay_factor: float
    nak_delay_max: float
    max_input_bytes: int = 0
    work_dir: str = ""

    @property
    def heartbeat_interval(self) -> float:
        return self.ack_wait * self.heartbeat_fraction

    def nak_delay_for(self, delivery: int) -> float:
        """Seconds before the next delivery after delivery `delivery` failed."""
        delay = self.nak_delay * self.nak_delay_factor ** max(0, delivery - 1)
        return min(delay, self.nak_delay_max)


@dataclasses.dataclass(frozen=True)
class _ErrorRecord:
    """The last transient error of a job attempt, kept in the errors bucket."""

    delivery: int
    code: str
    message: str
    worker: str

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes) -> _ErrorRecord | None:
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None


class _Job:
    """One delivery of one job request, from fetch to ack, nak or term."""

    def __init__(self, msg: Msg, request: events_pb2.JobRequest, token: str) -> None:
        self.msg = msg
        self.request = request
        self.delivery = int(msg.metadata.num_delivered)
        self.token = token
        self.key = topology.cancellation_key(request.job_id, request.attempt)
        self.cancelled = False
        self.interrupted = False
        self.settled = False
        self.progress = -1
        self.heartbeat_stopped = False
        self.published_progress = -1
        self.last_progress_time = 0.0
        self.started = time.monotonic()
        # Why the job ended in failed or dead_lettered, for the span status.
        self.failure = ""
        self.timings: dict[str, float] = {}

    def on_progress(self, percent: int) -> None:
        self.progress = max(self.progress, min(100, max(0, percent)))


class Worker:
    """Runs queued jobs from the shared pull consumer until stopped."""

    def __init__(
        self,
        *,
        nc: NatsClient,
        js: JetStreamContext,
        pool: EnginePool,
        storage: Storage,
        options: WorkerOptions,
        metrics: Metrics = NOOP_METRICS,
    ) -> None:
        self._nc = nc
        self._metrics = metrics
        self._js = js
        self._pool = pool
        self._storage = storage
        self._options = options
        self._sub: JetStreamContext.PullSubscription | None = None
        self._cancel_sub: Subscription | None = None
        self._cancellations: KeyValue | None = None
        self._errors: KeyValue | None = None
        self._jobs: dict[str, _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._pull_task: asyncio.Task[None] | None = None
        self._work_dir = Path(options.work_dir or tempfile.gettempdir())
        self.state = WorkerState.NEW
        self.handled = 0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        """Bind to what the topology module created, then start pulling."""
        await topology.verify(
            self._js,
            streams=[topology.JOBS_STREAM, topology.EVENTS_STREAM],
            consumers=[(topology.JOBS_STREAM, topology.WORKERS_CONSUMER)],
            buckets=[topology.CANCELLATIONS_BUCKET, topology.JOB_ERRORS_BUCKET],
        )
        self._sub = await self._js.pull_subscribe_bind(
            durable=topology.WORKERS_CONSUMER, stream=topology.JOBS_STREAM
        )
        self._cancellations = await self._js.key_value(topology.CANCELLATIONS_BUCKET)
        self._errors = await self._js.key_value(topology.JOB_ERRORS_BUCKET)
        # A key-value put is a message on `$KV.<bucket>.<key>`: a plain
        # subscription sees a cancellation at once without a consumer per job.
        # Missed ones (while disconnected) are caught by the heartbeat's check.
        self._cancel_sub = await self._nc.subscribe(
            f"$KV.{topology.CANCELLATIONS_BUCKET}.>", cb=self._on_cancellation
        )
        self._work_dir.mkdir(parents=True, exist_ok=True)
        self.state = WorkerState.RUNNING
        self._pull_task = asyncio.create_task(self._pull_loop(), name="pull-jobs")
        logger.info(
            "worker pulling",
            extra={
                "worker_id": self._options.worker_id,
                "concurrency": self._options.concurrency,
            },
        )

    async def stop(self, grace: float) -> None:
        """Stop pulling; let jobs finish within `grace`, give the rest back.

        Bounded: at most about `grace` + the fetch timeout + the engine's kill
        grace, whatever the jobs or the connection do.
        """
        if self.state is not WorkerState.RUNNING:
            self.state = WorkerState.STOPPED
            return
        self.state = WorkerState.STOPPING
        self._slot_freed.set()
        logger.info("worker stopping", extra={"in_flight": self.in_flight})
        if self._pull_task is not None:
            # The pull in progress ends by its own timeout; cancelling it could
            # leave a pull request on the server that swallows a message.
            done, _ = await asyncio.wait(
                {self._pull_task}, timeout=self._options.fetch_timeout + 1.0
            )
            if not done:
                self._pull_task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        await self._give_back_remaining()
        for sub in (self._sub, self._cancel_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self.state = WorkerState.STOPPED
        logger.info("worker stopped", extra={"handled": self.handled})

    async def _give_back_remaining(self) -> None:
        if not self._tasks:
            return
        for job in self._jobs.values():
            job.interrupted = True
            self._pool.cancel(job.token)
        # Engines stop at their next check; each job then naks itself.
        await asyncio.wait(
            set(self._tasks), timeout=max(self._options.engine_kill_grace, 0.5)
        )
        for task in list(self._tasks):
            task.cancel()
        for job in list(self._jobs.values()):
            logger.warning("job given back to the queue on shutdown")
            await self._settle(job, "nak", delay=0)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)

    # --- pulling --------------------------------------------------------------

    async def _pull_loop(self) -> None:
        assert self._sub is not None
        failures = 0
        while self.state is WorkerState.RUNNING:
            free = self._options.concurrency - len(self._tasks)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                messages = await self._sub.fetch(
                    batch=min(free, self._options.fetch_batch),
                    timeout=self._options.fetch_timeout,
                )
            except TimeoutError:
                # No request within the fetch timeout (nats-py raises its own
                # TimeoutError or asyncio's, both builtin TimeoutErrors).
                failures = 0
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must survive
                failures += 1
                pause = min(0.05 * 2**failures, self._options.fetch_timeout)
                logger.warning(
                    "pulling job requests failed; retrying",
                    extra={"error": repr(exc), "pause_s": round(pause, 3)},
                )
                await asyncio.sleep(pause)
                continue
            failures = 0
            for msg in messages:
                if self.state is not WorkerState.RUNNING:
                    # Fetched while stopping: straight back for another replica.
                    with contextlib.suppress(Exception):
                        await msg.nak()
                    continue
                task = asyncio.create_task(self._handle(msg))
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("job task crashed", exc_info=task.exception())

    # --- one delivery -----------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        try:
            request = messaging.decode_job_request(msg)
        except DecodeError:
            logger.error(
                "undecodable job request terminated",
                extra={"subject": msg.subject, "bytes": len(msg.data)},
            )
            with contextlib.suppress(Exception):
                await msg.term()
            return
        job = _Job(msg, request, self._pool.new_token())
        self._jobs[job.token] = job
        age = message_age(msg)
        if age is not None:
            self._metrics.message_waited(subject=msg.subject, seconds=age)
        try:
            # The consumer span is the producer's child (trace context in the
            # headers); storage calls and events published inside carry it.
            # With tracing off it is the producer's context, passed through.
            with (
                logs.job_context(request.job_id),
                consumer_span(
                    msg,
                    consumer_group=topology.WORKERS_CONSUMER,
                    attributes={
                        "mutate.organization_id": request.organization_id,
                        "mutate.attempt": request.attempt,
                        "mutate.delivery": job.delivery,
                    },
                    tracer=tracer,
                ) as span,
            ):
                await self._run_delivery(job)
                if job.failure and span.is_recording():
                    span.set_status(Status(StatusCode.ERROR, job.failure))
        finally:
            self._jobs.pop(job.token, None)
            self.handled += 1

    async def _run_delivery(self, job: _Job) -> None:
        request = job.request
        if job.delivery > self._options.delivery_limit:
            await self._dead_letter(job, await self._recorded_error(job))
            return
        try:
            output, execution_log, warnings = await self._convert_with_heartbeat(job)
        except JobCancelled:
            await self._finish(job, events_pb2.JobEvent.CANCELLED, settle="ack")
        except Interrupted:
            await self._settle(job, "nak", delay=0)
        except PermanentFault as fault:
            job.failure = f"{fault.code}: {fault.message}"
            logger.warning(
                "job failed",
                extra={
                    "code": fault.code,
                    "reason": fault.message,
                    "cause": _cause(fault),
                },
            )
            await self._finish(
                job,
                events_pb2.JobEvent.FAILED,
                settle="term",
                error=fault.to_proto(),
                execution_log=fault.execution_log,
                warnings=fault.warnings,
            )
        except TransientFault as fault:
            await self._retry_later(job, fault)
        else:
            await self._finish(
                job,
                events_pb2.JobEvent.COMPLETED,
                settle="ack",
                output=output,
                execution_log=execution_log,
                warnings=warnings,
            )
            self._log_timings(job, request)

    async def _convert_with_heartbeat(
        self, job: _Job
    ) -> tuple[job_pb2.JobOutput, list[Any], list[str]]:
        heartbeat = asyncio.create_task(self._heartbeat(job), name="heartbeat")
        try:
            return await self._convert(job)
        finally:
            # Python 3.11's wait_for (inside nats-py) can swallow a cancel
            # that lands as its call completes: the flag ends the loop anyway,
            # and waiting with asyncio.wait never swallows our own cancel.
            job.heartbeat_stopped = True
            heartbeat.cancel()
            await asyncio.wait({heartbeat}, timeout=self._options.publish_timeout)

    async def _convert(
        self, job: _Job
    ) -> tuple[job_pb2.JobOutput, list[Any], list[str]]:
        data = await self._input_unless_cancelled(job)
        # `started` goes out while the engine runs; every later event waits
        # for it, so the order within the attempt holds.
        started = asyncio.create_task(
            self._publish(
                job, events_pb2.JobEvent.STARTED, start_time=messaging.now_timestamp()
            )
        )
        try:
            result = await self._convert_input(job, data)
        except BaseException:
            # Whatever failed, `started` must land before the terminal event.
            await asyncio.wait({started}, timeout=self._options.publish_timeout)
            raise
        await started
        return result

    async def _input_unless_cancelled(self, job: _Job) -> bytes:
        """The input, read while the cancellation bucket is asked: from the
        request when it carries it (small inputs), else from storage."""
        clock = time.monotonic()
        request = job.request
        read = (
            self._inline_input(request.input_data)
            if request.input_data
            else self._storage.get_bytes(
                request.input_key, max_bytes=self._options.max_input_bytes
            )
        )
        cancelled, data = await asyncio.gather(
            self._is_cancelled(job), read, return_exceptions=True
        )
        job.timings["input"] = time.monotonic() - clock
        # A cancelled attempt never starts, whatever happened to its input.
        if cancelled is True:
            raise JobCancelled()
        if isinstance(cancelled, BaseException):
            raise cancelled
        if isinstance(data, BaseException):
            with faults_of("input"):
                raise data
        assert isinstance(data, bytes)
        self._check_stop(job)
        return data

    async def _inline_input(self, data: bytes) -> bytes:
        """An input the request carried, held to the limit a read has."""
        limit = self._options.max_input_bytes
        if limit and len(data) > limit:
            raise errors.FailedPrecondition(
                f"the input is {len(data)} bytes, over the limit of {limit} bytes"
            )
        return data

    async def _convert_input(
        self, job: _Job, data: bytes
    ) -> tuple[job_pb2.JobOutput, list[Any], list[str]]:
        request = job.request
        output_path = self._work_dir / f"mutate-{job.token}.out"
        try:
            clock = time.monotonic()
            with faults_of("engine"):
                outcome = await self._pool.convert(
                    ConvertTask(
                        configuration=request.configuration.SerializeToString(),
                        data=data,
                        file_name=request.input_file_name,
                        output_path=str(output_path),
                    ),
                    token=job.token,
                    timeout=self._options.engine_timeout,
                    on_progress=job.on_progress,
                )
            job.timings["pool"] = time.monotonic() - clock
            job.timings["engine"] = outcome.engine_seconds
            if outcome.cancelled:
                self._check_stop(job)
                raise TransientFault(
                    "ENGINE_STOPPED", "the conversion stopped without a reason"
                )
            execution_log = outcome.log_entries()
            error = outcome.job_error()
            if error is not None:
                raise JobFault.from_proto(
                    error,
                    execution_log=execution_log,
                    warnings=outcome.warnings,
                )
            self._check_stop(job)

            key, file_name = self._output_key(request, outcome.file_extension)
            clock = time.monotonic()
            with faults_of("output"):
                info = await put_file(
                    self._storage,
                    key,
                    output_path,
                    content_type=outcome.content_type,
                    metadata={
                        "job-id": request.job_id,
                        "attempt": str(request.attempt),
                    },
                )
            job.timings["output"] = time.monotonic() - clock
        finally:
            output_path.unlink(missing_ok=True)
        output = job_pb2.JobOutput(
            key=key,
            file_name=file_name,
            content_type=outcome.content_type,
            bytes=info.size,
            rows=outcome.rows,
            columns=outcome.columns,
            sha256=info.sha256,
        )
        return output, execution_log, list(outcome.warnings)

    def _check_stop(self, job: _Job) -> None:
        if job.cancelled:
            raise JobCancelled()
        if job.interrupted:
            raise Interrupted()

    @staticmethod
    def _output_key(request: events_pb2.JobRequest, extension: str) -> tuple[str, str]:
        """The request's output key, else one derived from the job."""
        key = request.output_key or output_key_for(
            request.organization_id,
            request.job_id,
            request.input_file_name,
            extension,
        )
        return key, key.rsplit("/", 1)[-1]

    async def _heartbeat(self, job: _Job) -> None:
        """In-progress acks, progress events and a cancellation check."""
        interval = self._options.heartbeat_interval
        tick = min(interval, self._options.progress_interval or interval)
        last_beat = time.monotonic()
        job.last_progress_time = last_beat
        while not job.heartbeat_stopped:
            await asyncio.sleep(tick)
            if job.heartbeat_stopped:
                return
            now = time.monotonic()
            if now - last_beat >= interval:
                last_beat = now
                try:
                    await job.msg.in_progress()
                    if not job.cancelled and await self._is_cancelled(job):
                        self._cancel_job(job)
                except Exception as exc:  # noqa: BLE001 - next beat retries
                    logger.warning("heartbeat failed", extra={"error": repr(exc)})
            if (
                job.progress > job.published_progress
                and now - job.last_progress_time >= self._options.progress_interval
            ):
                job.last_progress_time = now
                percent = job.progress
                try:
                    await self._publish(
                        job, events_pb2.JobEvent.PROGRESS, progress_percent=percent
                    )
                    job.published_progress = percent
                except Exception as exc:  # noqa: BLE001 - progress is best effort
                    logger.warning("progress event lost", extra={"error": repr(exc)})

    # --- cancellation -----------------------------------------------------------

    async def _is_cancelled(self, job: _Job) -> bool:
        if job.cancelled:
            return True
        assert self._cancellations is not None
        with faults_of("events"):
            try:
                await self._cancellations.get(job.key)
            except KeyNotFoundError:
                return False
        job.cancelled = True
        return True

    async def _on_cancellation(self, msg: Msg) -> None:
        operation = (msg.headers or {}).get(_KV_OPERATION, "")
        if operation in ("DEL", "PURGE"):
            return
        key = msg.subject.split(".", 2)[-1]
        for job in list(self._jobs.values()):
            if job.key == key:
                self._cancel_job(job)

    def _cancel_job(self, job: _Job) -> None:
        if not job.cancelled:
            # Called from the cancellation watcher, outside the job's
            # job_context: name the job here.
            logger.info(
                "job cancelled while running",
                extra={"job_id": job.request.job_id, "attempt": job.request.attempt},
            )
        job.cancelled = True
        self._pool.cancel(job.token)

    # --- outcomes ---------------------------------------------------------------

    async def _retry_later(self, job: _Job, fault: TransientFault) -> None:
        await self._record_error(job, fault)
        if job.delivery >= self._options.delivery_limit:
            # The last allowed delivery: no point waiting for another one.
            await self._dead_letter(job, fault.to_proto(), fault=fault)
            return
        delay = self._options.nak_delay_for(job.delivery)
        logger.warning(
            "transient fault; job will be redelivered",
            extra={
                "code": fault.code,
                "reason": fault.message,
                "cause": _cause(fault),
                "delivery": job.delivery,
                "delay_s": round(delay, 3),
            },
        )
        await self._settle(job, "nak", delay=delay)

    async def _dead_letter(
        self,
        job: _Job,
        error: job_pb2.JobError,
        *,
        fault: JobFault | None = None,
    ) -> None:
        job.failure = f"dead-lettered: {error.code}: {error.message}"
        logger.warning(
            "job dead-lettered",
            extra={
                "delivery": job.delivery,
                "code": error.code,
                "reason": error.message,
            },
        )
        await self._finish(
            job,
            events_pb2.JobEvent.DEAD_LETTERED,
            settle="term",
            error=error,
            execution_log=fault.execution_log if fault else (),
            warnings=fault.warnings if fault else (),
        )

    async def _record_error(self, job: _Job, fault: JobFault) -> None:
        """Keep the error where the delivery after a crash can find it."""
        assert self._errors is not None
        record = _ErrorRecord(
            delivery=job.delivery,
            code=fault.code,
            message=fault.message,
            worker=self._options.worker_id,
        )
        try:
            await self._errors.put(job.key, record.encode())
        except Exception as exc:  # noqa: BLE001 - best effort by design
            logger.warning("could not record the job error", extra={"error": repr(exc)})

    async def _recorded_error(self, job: _Job) -> job_pb2.JobError:
        """The last known error of a job whose previous delivery died."""
        assert self._errors is not None
        previous = job.delivery - 1
        record: _ErrorRecord | None = None
        try:
            entry = await self._errors.get(job.key)
            record = _ErrorRecord.decode(entry.value or b"")
        except KeyNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - dead-letter with what we know
            logger.warning("could not read the job error", extra={"error": repr(exc)})
        if record is not None and record.delivery >= previous:
            return job_pb2.JobError(
                code=record.code,
                message=f"gave up after {previous} deliveries; the last one "
                f"failed: {record.message}",
                retryable=True,
            )
        message = f"worker stopped during delivery {previous}"
        if record is not None:
            message += (
                f"; before that, delivery {record.delivery} failed: {record.message}"
            )
        return job_pb2.JobError(code="WORKER_STOPPED", message=message, retryable=True)

    async def _finish(
        self,
        job: _Job,
        event_type: int,
        *,
        settle: str,
        **fields: Any,
    ) -> None:
        """Publish the terminal event, then ack or terminate the message.

        If the event cannot be published the message is naked instead: the
        next delivery publishes it (the event id makes that safe).

        TODO: when that happens on the last allowed delivery, the next one is
        dead-lettered although the output was stored; telling "only the event
        was lost" apart would need the outcome kept beside the error record.
        """
        try:
            await self._publish(job, event_type, **fields)
        except TransientFault as fault:
            logger.warning(
                "terminal event not published; job will be redelivered",
                extra={"reason": fault.message},
            )
            await self._record_error(job, fault)
            await self._settle(
                job, "nak", delay=self._options.nak_delay_for(job.delivery)
            )
            return
        await self._settle(job, settle)

    async def _publish(self, job: _Job, event_type: int, **fields: Any) -> None:
        request = job.request
        event = events_pb2.JobEvent(
            type=event_type,  # type: ignore[arg-type]
            job_id=request.job_id,
            organization_id=request.organization_id,
            attempt=request.attempt,
            configuration_id=request.configuration.id,
            configuration_version=request.configuration.version,
            webhook_url=request.webhook_url,
            client_reference=request.client_reference,
            worker_id=self._options.worker_id,
            delivery=job.delivery,
            **fields,
        )
        clock = time.monotonic()
        with faults_of("events"):
            await messaging.publish_event(
                self._js, event, timeout=self._options.publish_timeout
            )
        job.timings["events"] = job.timings.get("events", 0.0) + (
            time.monotonic() - clock
        )

    async def _settle(self, job: _Job, how: str, *, delay: float = 0.0) -> None:
        """Ack, nak or terminate once; a lost settle means a redelivery."""
        if job.settled:
            return
        job.settled = True
        try:
            if how == "ack":
                await job.msg.ack()
            elif how == "term":
                await job.msg.term()
            else:
                await job.msg.nak(delay=delay or None)
        except Exception as exc:  # noqa: BLE001 - the ack wait redelivers it
            logger.warning(
                "could not settle the job request",
                extra={"how": how, "error": repr(exc)},
            )

    def _log_timings(self, job: _Job, request: events_pb2.JobRequest) -> None:
        """One line a job: where its time went (the benchmark reads these)."""
        total = time.monotonic() - job.started
        engine = job.timings.get("engine", 0.0)
        pool = job.timings.get("pool", 0.0)

        def ms(seconds: float) -> float:
            return round(seconds * 1000, 2)

        logger.info(
            "job completed",
            extra={
                "delivery": job.delivery,
                "input_bytes": request.input_bytes,
                "total_ms": ms(total),
                "engine_ms": ms(engine),
                # NATS, storage and events: everything but the engine pool.
                "outside_engine_ms": ms(total - pool),
                # IPC to the engine process and waiting for a free one.
                "pool_overhead_ms": ms(max(0.0, pool - engine)),
                "input_ms": ms(job.timings.get("input", 0.0)),
                "output_ms": ms(job.timings.get("output", 0.0)),
                "events_ms": ms(job.timings.get("events", 0.0)),
            },
        )


def options_from_settings(
    settings: Any, *, ack_wait: float, max_input_bytes: int
) -> WorkerOptions:
    """The worker's options from `TransformerSettings` and the ack wait."""
    return WorkerOptions(
        worker_id=settings.worker_id,
        concurrency=settings.concurrency,
        fetch_batch=settings.worker_fetch_batch,
        fetch_timeout=settings.worker_fetch_timeout,
        delivery_limit=settings.job_delivery_limit,
        ack_wait=ack_wait,
        heartbeat_fraction=settings.job_heartbeat_fraction,
        progress_interval=settings.job_progress_interval,
        engine_timeout=settings.engine_timeout,
        engine_kill_grace=settings.engine_kill_grace,
        publish_timeout=settings.nats_publish_timeout,
        nak_delay=settings.job_nak_delay,
        nak_delay_factor=settings.job_nak_delay_factor,
        nak_delay_max=settings.job_nak_delay_max,
        max_input_bytes=max_input_bytes,
        work_dir=settings.work_dir,
    )


def _cause(fault: JobFault) -> str:
    """What the fault came from, for operators: the job's error is phrased for
    its owner and may leave details out (e.g. storage keys)."""
    return repr(fault.__cause__) if fault.__cause__ is not None else ""


__all__ = ["Worker", "WorkerOptions", "WorkerState", "options_from_settings"]
