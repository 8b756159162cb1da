"""Settings of the transformer: its gRPC service, engine pool and queue worker.

Built once in `main` from the environment; everything below `main` receives
plain keyword arguments. Every time constant is in milliseconds in the
environment and float seconds in code (defaults too), so tests run the queue
in milliseconds.
The ack wait of the job consumer is a topology setting
(`MUTATE_JOB_ACK_WAIT_MS`, `mutate.common.topology.TopologySettings`); the
worker heartbeats at a fraction of it.
"""

from __future__ import annotations

import dataclasses
import os
import socket

from mutate.common.service_settings import CommonSettings, NatsSettings
from mutate.common.settings import SettingsError, check_positive, setting


def default_worker_id() -> str:
    """`hostname-pid`: unique per replica, readable in events and logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerSettings(CommonSettings, NatsSettings):
    """Everything `mutate-transformer serve` and `work` read."""

    grpc_port: int = setting("MUTATE_GRPC_PORT", 50053, help="gRPC port.")

    storage_address: str = setting(
        "MUTATE_STORAGE_ADDRESS",
        "127.0.0.1:50052",
        help="host:port of the storage service (gRPC).",
    )
    storage_timeout: float = setting(
        "MUTATE_STORAGE_TIMEOUT_MS",
        30.0,
        unit="ms",
        help="Deadline of one unary call to the storage service, in ms.",
    )
    storage_stream_timeout: float = setting(
        "MUTATE_STORAGE_STREAM_TIMEOUT_MS",
        600.0,
        unit="ms",
        help="Deadline of one whole upload or download through storage, in ms.",
    )

    sync_max_bytes: int = setting(
        "MUTATE_SYNC_MAX_BYTES",
        10 * 1024 * 1024,
        help="Largest input `Transform` and `Preview` accept; bigger files go "
        "through the queue.",
    )

    engine_processes: int = setting(
        "MUTATE_ENGINE_PROCESSES",
        0,
        help="Engine processes in the pool; 0 means one per CPU.",
    )
    engine_nice: int = setting(
        "MUTATE_ENGINE_NICE",
        10,
        help="Niceness added to engine processes (0-19): conversions are "
        "batch CPU work, so when CPUs are busy the I/O path (NATS, storage, "
        "gRPC, this worker's own loop) is served first; 0 keeps the "
        "transformer's priority.",
    )
    engine_timeout: float = setting(
        "MUTATE_ENGINE_TIMEOUT_MS",
        15 * 60.0,
        unit="ms",
        help="Longest one conversion may run, in ms; past it the engine is "
        "asked to stop, then its process is killed.",
    )
    engine_kill_grace: float = setting(
        "MUTATE_ENGINE_KILL_GRACE_MS",
        2.0,
        unit="ms",
        help="How long a conversion asked to stop may take to stop by itself "
        "before its process is killed, in ms.",
    )
    work_dir: str = setting(
        "MUTATE_TRANSFORMER_WORK_DIR",
        "",
        help="Folder for outputs on their way to storage; empty means the "
        "system temp folder.",
    )

    worker_concurrency: int = setting(
        "MUTATE_WORKER_CONCURRENCY",
        0,
        help="Jobs one worker replica runs at once; 0 means twice the engine "
        "processes (so storage and NATS hops overlap conversions).",
    )
    worker_fetch_batch: int = setting(
        "MUTATE_WORKER_FETCH_BATCH",
        16,
        help="Most job requests fetched in one pull (never more than free slots).",
    )
    worker_fetch_timeout: float = setting(
        "MUTATE_WORKER_FETCH_TIMEOUT_MS",
        2.0,
        unit="ms",
        help="How long one pull waits for job requests, in ms; also bounds how "
        "long a stopping worker waits for its last pull.",
    )
    worker_id: str = setting(
        "MUTATE_WORKER_ID",
        default_factory=default_worker_id,
        help="Name of this replica in events and logs; default hostname-pid.",
    )
    job_delivery_limit: int = setting(
        "MUTATE_JOB_DELIVERY_LIMIT",
        5,
        help="Deliveries a job request may take; a delivery past it is not run "
        "but dead-lettered with the last known error.",
    )
    job_nak_delay: float = setting(
        "MUTATE_JOB_NAK_DELAY_MS",
        1.0,
        unit="ms",
        help="Redelivery delay after the first transient fault, in ms.",
    )
    job_nak_delay_factor: float = setting(
        "MUTATE_JOB_NAK_DELAY_FACTOR",
        2.0,
        help="Each further delivery waits this many times longer.",
    )
    job_nak_delay_max: float = setting(
        "MUTATE_JOB_NAK_DELAY_MAX_MS",
        60.0,
        unit="ms",
        help="Longest redelivery delay, in ms.",
    )
    job_heartbeat_fraction: float = setting(
        "MUTATE_JOB_HEARTBEAT_FRACTION",
        0.3,
        help="In-progress acks are sent every this fraction of the ack wait.",
    )
    job_progress_interval: float = setting(
        "MUTATE_JOB_PROGRESS_INTERVAL_MS",
        1.0,
        unit="ms",
        help="Least time between two `progress` events of one job, in ms.",
    )
    nats_publish_timeout: float = setting(
        "MUTATE_NATS_PUBLISH_TIMEOUT_MS",
        5.0,
        unit="ms",
        help="How long a JetStream publish or key-value call may take, in ms.",
    )

    test_engine_delay: float = setting(
        "MUTATE_TEST_ENGINE_DELAY_MS",
        0.0,
        unit="ms",
        help="FOR TESTS ONLY: every conversion first idles this long (asking "
        "for cancellation and reporting progress as it goes), so tests can "
        "kill, cancel or stop a worker mid-job. Keep 0 in production.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(
            MUTATE_SYNC_MAX_BYTES=self.sync_max_bytes,
            MUTATE_ENGINE_TIMEOUT_MS=self.engine_timeout,
            MUTATE_STORAGE_TIMEOUT_MS=self.storage_timeout,
            MUTATE_STORAGE_STREAM_TIMEOUT_MS=self.storage_stream_timeout,
            MUTATE_WORKER_FETCH_BATCH=self.worker_fetch_batch,
            MUTATE_WORKER_FETCH_TIMEOUT_MS=self.worker_fetch_timeout,
            MUTATE_JOB_DELIVERY_LIMIT=self.job_delivery_limit,
            MUTATE_JOB_NAK_DELAY_FACTOR=self.job_nak_delay_factor,
            MUTATE_NATS_PUBLISH_TIMEOUT_MS=self.nats_publish_timeout,
        )
        for name, value in (
            ("MUTATE_ENGINE_PROCESSES", self.engine_processes),
            ("MUTATE_WORKER_CONCURRENCY", self.worker_concurrency),
            ("MUTATE_ENGINE_KILL_GRACE_MS", self.engine_kill_grace),
            ("MUTATE_JOB_NAK_DELAY_MS", self.job_nak_delay),
            ("MUTATE_JOB_PROGRESS_INTERVAL_MS", self.job_progress_interval),
            ("MUTATE_TEST_ENGINE_DELAY_MS", self.test_engine_delay),
        ):
            if value < 0:
                raise SettingsError(f"{name} must not be negative")
        if not 0 <= self.engine_nice <= 19:
            raise SettingsError("MUTATE_ENGINE_NICE must be in 0..19")
        if self.job_nak_delay_max < self.job_nak_delay:
            raise SettingsError(
                "MUTATE_JOB_NAK_DELAY_MAX_MS must not be below MUTATE_JOB_NAK_DELAY_MS"
            )
        if not 0 < self.job_heartbeat_fraction < 1:
            raise SettingsError("MUTATE_JOB_HEARTBEAT_FRACTION must be in (0, 1)")
        if not self.worker_id or any(c.isspace() for c in self.worker_id):
            raise SettingsError("MUTATE_WORKER_ID must be a non-empty word")

    @property
    def processes(self) -> int:
        """Engine processes, with 0 resolved to the CPU count."""
        return self.engine_processes or max(1, os.cpu_count() or 1)

    @property
    def concurrency(self) -> int:
        """Jobs in flight per worker, with 0 resolved."""
        return self.worker_concurrency or 2 * self.processes
