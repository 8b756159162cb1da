"""The whole NATS JetStream topology of Mutate, declared in one place.

Streams, subjects, consumers and the cancellation bucket are created or
updated by `ensure`, which the local launcher, the test fixtures and the Helm
hook job all call (`python -m mutate.common.topology ensure`). Services only
bind to what exists: `verify` fails with a message naming what is missing.

- Job requests: a work-queue stream on one subject; the message id
  `{jobId}.{attempt}` lets JetStream drop a repeated publish of one attempt
  while a retry (a new attempt) goes through. One durable pull consumer is
  shared by every worker. Its MaxDeliver is unlimited on purpose: the worker
  dead-letters by delivery count (JETSTREAM_DELIVERY_LIMIT), so a message can
  never be left stuck in a work-queue stream (see docs/architecture.md).
- Job events: a limits stream on `mutate.events.{org}.{job}.{type}` with a
  durable consumer for the gateway's projector and one for the notifier.
- Cancellations: a key-value bucket keyed by `{jobId}.{attempt}`.
- Job errors: a key-value bucket keyed by `{jobId}.{attempt}` holding the
  last transient error of a job request, for the dead-letter event.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

import nats
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError, NotFoundError

from mutate.common.settings import SettingsError, load, setting

logger = logging.getLogger(__name__)

JOBS_STREAM = "MUTATE_JOBS"
JOBS_SUBJECT = "mutate.jobs.requests"
WORKERS_CONSUMER = "mutate-workers"

EVENTS_STREAM = "MUTATE_EVENTS"
EVENTS_SUBJECT_PREFIX = "mutate.events"
PROJECTOR_CONSUMER = "gateway-projector"
NOTIFIER_CONSUMER = "notifier"
TERMINAL_EVENT_TYPES = ("completed", "failed", "dead_lettered", "cancelled")

CANCELLATIONS_BUCKET = "mutate-cancellations"
# The last transient error of each delivery, keyed `{jobId}.{attempt}`: what a
# worker reports when it dead-letters a job whose previous delivery died.
JOB_ERRORS_BUCKET = "mutate-job-errors"

EVENT_TYPES = ("started", "progress", *TERMINAL_EVENT_TYPES)


def event_subject(organization_id: str, job_id: str, event_type: str) -> str:
    """`mutate.events.{organization}.{job}.{type}`; ids never contain dots."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    for part in (organization_id, job_id):
        if not part or any(c in part for c in ".*> \t\r\n"):
            raise ValueError(f"{part!r} cannot be a subject token")
    return f"{EVENTS_SUBJECT_PREFIX}.{organization_id}.{job_id}.{event_type}"


def job_events_filter(organization_id: str, job_id: str) -> str:
    """Subject filter for every event of one job (for watching it)."""
    return f"{EVENTS_SUBJECT_PREFIX}.{organization_id}.{job_id}.*"


def request_message_id(job_id: str, attempt: int) -> str:
    return f"{job_id}.{attempt}"


def cancellation_key(job_id: str, attempt: int) -> str:
    return f"{job_id}.{attempt}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopologySettings:
    """Limits and time constants of the streams and consumers.

    Time defaults are in the field's unit (seconds); the environment gives ms.
    """

    job_ack_wait: float = setting(
        "MUTATE_JOB_ACK_WAIT_MS",
        30.0,
        unit="ms",
        help="A delivery not acked (nor in-progress-acked) in this long is "
        "redelivered, in ms. Workers heartbeat well inside it.",
    )
    job_max_ack_pending: int = setting(
        "MUTATE_JOB_MAX_ACK_PENDING",
        1000,
        help="Job requests in flight across all workers.",
    )
    job_duplicate_window: float = setting(
        "MUTATE_JOB_DUPLICATE_WINDOW_MS",
        120.0,
        unit="ms",
        help="How long a repeated publish of one attempt is dropped, in ms.",
    )
    job_max_age: float = setting(
        "MUTATE_JOB_MAX_AGE_MS",
        7 * 24 * 3600.0,
        unit="ms",
        help="Job requests older than this are discarded, in ms.",
    )
    events_max_age: float = setting(
        "MUTATE_EVENTS_MAX_AGE_MS",
        7 * 24 * 3600.0,
        unit="ms",
        help="How long job events are kept, in ms.",
    )
    events_max_bytes: int = setting(
        "MUTATE_EVENTS_MAX_BYTES",
        1024 * 1024 * 1024,
        help="Size cap of the event stream; oldest events go first.",
    )
    cancellation_ttl: float = setting(
        "MUTATE_CANCELLATION_TTL_MS",
        7 * 24 * 3600.0,
        unit="ms",
        help="How long a cancellation mark is kept, in ms.",
    )
    replicas: int = setting(
        "MUTATE_NATS_REPLICAS",
        1,
        help="Stream replicas (3 on a JetStream cluster).",
    )


def _jobs_stream(s: TopologySettings) -> js_api.StreamConfig:
    return js_api.StreamConfig(
        name=JOBS_STREAM,
        subjects=[JOBS_SUBJECT],
        retention=js_api.RetentionPolicy.WORK_QUEUE,
        storage=js_api.StorageType.FILE,
        duplicate_window=s.job_duplicate_window,
        max_age=s.job_max_age,
        num_replicas=s.replicas,
        description="Queued job requests (mutate.v1.JobRequest)",
    )


def _events_stream(s: TopologySettings) -> js_api.StreamConfig:
    return js_api.StreamConfig(
        name=EVENTS_STREAM,
        subjects=[f"{EVENTS_SUBJECT_PREFIX}.>"],
        retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE,
        # Terminal events carry `{job}.{attempt}.{type}` ids: one per attempt.
        duplicate_window=120.0,
        max_age=s.events_max_age,
        max_bytes=s.events_max_bytes,
        num_replicas=s.replicas,
        description="Job lifecycle events (mutate.v1.JobEvent)",
    )


def _workers_consumer(s: TopologySettings) -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        durable_name=WORKERS_CONSUMER,
        name=WORKERS_CONSUMER,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=s.job_ack_wait,
        max_deliver=-1,
        max_ack_pending=s.job_max_ack_pending,
        filter_subject=JOBS_SUBJECT,
        description="Shared pull consumer of every transformer worker",
    )


def _projector_consumer() -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        durable_name=PROJECTOR_CONSUMER,
        name=PROJECTOR_CONSUMER,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=30.0,
        max_deliver=-1,
        max_ack_pending=5000,
        description="Projects job events into the gateway's job rows",
    )


def _notifier_consumer() -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        durable_name=NOTIFIER_CONSUMER,
        name=NOTIFIER_CONSUMER,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=30.0,
        max_deliver=-1,
        max_ack_pending=5000,
        filter_subjects=[
            f"{EVENTS_SUBJECT_PREFIX}.*.*.{t}" for t in TERMINAL_EVENT_TYPES
        ],
        description="Turns terminal job events into webhook deliveries",
    )


class TopologyMissing(RuntimeError):
    """A stream, consumer or bucket a service binds to does not exist."""


async def ensure(js: JetStreamContext, settings: TopologySettings) -> list[str]:
    """Create or update every stream, consumer and bucket; idempotent.

    Returns what was created or changed (empty when nothing was).
    """
    changed: list[str] = []
    for stream_config in (_jobs_stream(settings), _events_stream(settings)):
        changed += await _ensure_stream(js, stream_config)
    for stream, consumer_config in (
        (JOBS_STREAM, _workers_consumer(settings)),
        (EVENTS_STREAM, _projector_consumer()),
        (EVENTS_STREAM, _notifier_consumer()),
    ):
        changed += await _ensure_consumer(js, stream, consumer_config)
    changed += await _ensure_bucket(js, settings)
    for item in changed:
        logger.info("topology changed", extra={"item": item})
    return changed


async def _ensure_stream(
    js: JetStreamContext, config: js_api.StreamConfig
) -> list[str]:
    assert config.name
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        return [f"stream {config.name} created"]
    if _differs(info.config, config):
        await js.update_stream(config)
        return [f"stream {config.name} updated"]
    return []


async def _ensure_consumer(
    js: JetStreamContext, stream: str, config: js_api.ConsumerConfig
) -> list[str]:
    assert config.durable_name
    try:
        info = await js.consumer_info(stream, config.durable_name)
    except NotFoundError:
        await js.add_consumer(stream, config)
        return [f"consumer {stream}/{config.durable_name} created"]
    if _differs(info.config, config):
        # CONSUMER.CREATE with an existing name updates the editable fields.
        await js.add_consumer(stream, config)
        return [f"consumer {stream}/{config.durable_name} updated"]
    return []


async def _ensure_bucket(js: JetStreamContext, s: TopologySettings) -> list[str]:
    changed: list[str] = []
    for config in (
        js_api.KeyValueConfig(
            bucket=CANCELLATIONS_BUCKET,
            ttl=s.cancellation_ttl,
            history=1,
            replicas=s.replicas,
            description="Cancelled job attempts, keyed {jobId}.{attempt}",
        ),
        js_api.KeyValueConfig(
            bucket=JOB_ERRORS_BUCKET,
            # A request older than this is gone from the queue anyway.
            ttl=s.job_max_age,
            history=1,
            replicas=s.replicas,
            description="Last transient error of a job attempt, keyed "
            "{jobId}.{attempt}",
        ),
    ):
        try:
            await js.key_value(config.bucket)
        except BucketNotFoundError:
            await js.create_key_value(config)
            changed.append(f"bucket {config.bucket} created")
    return changed


def _differs(current: object, wanted: object) -> bool:
    """True when a field we set differs from what the server holds."""
    for field in dataclasses.fields(wanted):  # type: ignore[arg-type]
        value = getattr(wanted, field.name)
        if value is None:
            continue
        have = getattr(current, field.name, None)
        if isinstance(value, float) and isinstance(have, (int, float)):
            if abs(value - have) > 1e-6:
                return True
        elif isinstance(value, list) and have is not None:
            if sorted(value) != sorted(have):
                return True
        elif have != value:
            return True
    return False


async def verify(
    js: JetStreamContext,
    *,
    streams: Sequence[str] = (),
    consumers: Sequence[tuple[str, str]] = (),
    buckets: Sequence[str] = (),
) -> None:
    """Fail with TopologyMissing naming everything that is not there."""
    missing: list[str] = []
    for name in streams:
        try:
            await js.stream_info(name)
        except NotFoundError:
            missing.append(f"stream {name}")
    for stream, consumer in consumers:
        try:
            await js.consumer_info(stream, consumer)
        except NotFoundError:
            missing.append(f"consumer {stream}/{consumer}")
    for bucket in buckets:
        try:
            await js.key_value(bucket)
        except BucketNotFoundError:
            missing.append(f"key-value bucket {bucket}")
    if missing:
        raise TopologyMissing(
            "NATS JetStream topology is missing: "
            + ", ".join(missing)
            + ". Run `python -m mutate.common.topology ensure` (the local "
            "launcher and the Helm hook do this) before starting services."
        )


async def _ensure_command(url: str, env: dict[str, str]) -> int:
    settings = load(TopologySettings, env)
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        changed = await ensure(nc.jetstream(), settings)
    finally:
        await nc.close()
    print("\n".join(changed) if changed else "topology up to date")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mutate.common.topology",
        description="Create or update Mutate's NATS JetStream topology.",
    )
    parser.add_argument("command", choices=["ensure"])
    parser.add_argument(
        "--nats-url",
        default=os.environ.get("MUTATE_NATS_URL", "nats://127.0.0.1:4222"),
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        return asyncio.run(_ensure_command(args.nats_url, dict(os.environ)))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
