"""The gateway's settings, read once in `main` from the environment.

Every time constant is a setting in milliseconds (float seconds in code), so
the tests run the same code with short timeouts.
"""

from __future__ import annotations

import dataclasses

from mutate.common.netguard import NetworkPolicy
from mutate.common.service_settings import CommonSettings, NatsSettings
from mutate.common.settings import SettingsError, check_positive, setting
from mutate.gateway.rest._settings import RestSettings

# Defaults of `unit="ms"` fields are in the field's unit: seconds.
_DAY = 24 * 3600.0
# S3 refuses presigned URLs that live longer than 7 days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewaySettings(CommonSettings, NatsSettings, RestSettings):
    """Everything `mutate-gateway` reads from its environment."""

    grpc_port: int = setting("MUTATE_GRPC_PORT", 50051, help="gRPC port.")
    http_host: str = setting(
        "MUTATE_HTTP_HOST",
        "127.0.0.1",
        help="Address the REST server binds; 0.0.0.0 in a container.",
    )
    http_port: int = setting("MUTATE_HTTP_PORT", 8080, help="REST/JSON port.")

    # Dependencies.
    database_url: str = setting(
        "MUTATE_DATABASE_URL",
        help="PostgreSQL connection string (libpq URI or key=value).",
        secret=True,
    )
    database_schema: str = setting(
        "MUTATE_DATABASE_SCHEMA",
        "gateway",
        help="PostgreSQL schema holding the gateway's tables.",
    )
    database_pool_min: int = setting(
        "MUTATE_DATABASE_POOL_MIN", 2, help="Connections kept open."
    )
    database_pool_max: int = setting(
        "MUTATE_DATABASE_POOL_MAX", 16, help="Most connections the pool opens."
    )
    database_timeout: float = setting(
        "MUTATE_DATABASE_TIMEOUT_MS",
        10.0,
        unit="ms",
        help="How long a request waits for a pooled connection, in ms.",
    )
    migrate_on_start: bool = setting(
        "MUTATE_MIGRATE_ON_START",
        True,
        help="Apply pending migrations (under an advisory lock) at start-up.",
    )
    storage_address: str = setting(
        "MUTATE_STORAGE_ADDRESS",
        "127.0.0.1:50052",
        help="host:port of the storage service.",
    )
    transformer_address: str = setting(
        "MUTATE_TRANSFORMER_ADDRESS",
        "127.0.0.1:50053",
        help="host:port of the transformer's gRPC server.",
    )
    notifier_address: str = setting(
        "MUTATE_NOTIFIER_ADDRESS",
        "127.0.0.1:50054",
        help="host:port of the notifier service.",
    )
    rpc_timeout: float = setting(
        "MUTATE_RPC_TIMEOUT_MS",
        10.0,
        unit="ms",
        help="Deadline of calls to storage, notifier and configuration "
        "validation, in ms.",
    )
    transform_timeout: float = setting(
        "MUTATE_TRANSFORM_TIMEOUT_MS",
        60.0,
        unit="ms",
        help="Deadline of a synchronous Transform or Preview call, in ms.",
    )
    nats_publish_timeout: float = setting(
        "MUTATE_NATS_PUBLISH_TIMEOUT_MS",
        5.0,
        unit="ms",
        help="How long a JetStream publish waits for its ack, in ms.",
    )

    # Jobs.
    sync_max_bytes: int = setting(
        "MUTATE_SYNC_MAX_BYTES",
        10 * 1024 * 1024,
        help="Largest input converted synchronously in `auto` mode and "
        "accepted in `sync` mode.",
    )
    # The transformer refuses inputs over its MUTATE_LIMIT_MAX_INPUT_BYTES
    # (200 MiB by default): a larger limit here would accept files whose jobs
    # can only fail later, so the default is the same and the gateway refuses
    # them up front. tests/gateway checks the two defaults stay equal.
    max_input_bytes: int = setting(
        "MUTATE_MAX_INPUT_BYTES",
        200 * 1024 * 1024,
        help="Largest input file a job accepts (inline, streamed or uploaded). "
        "Keep it at most the transformer's MUTATE_LIMIT_MAX_INPUT_BYTES (the "
        "same 200 MiB by default), or larger files are accepted and then fail.",
    )
    inline_input_max_bytes: int = setting(
        "MUTATE_INLINE_INPUT_MAX_BYTES",
        512 * 1024,
        help="Largest input a queued job request carries itself, sparing the "
        "worker a storage read (the input is stored all the same); 0 = never. "
        "A request never exceeds the NATS server's max_payload (1 MiB by "
        "default): larger ones go without.",
    )
    sync_concurrency: int = setting(
        "MUTATE_SYNC_CONCURRENCY",
        8,
        help="Synchronous conversions in flight per replica; in `auto` mode "
        "further jobs go to the queue.",
    )
    max_queued_jobs: int = setting(
        "MUTATE_MAX_QUEUED_JOBS",
        1000,
        help="Pending plus running jobs an organization may have; 0 = no limit.",
    )
    idempotency_ttl: float = setting(
        "MUTATE_IDEMPOTENCY_TTL_MS",
        _DAY,
        unit="ms",
        help="How long an idempotency key is remembered, in ms.",
    )
    idempotency_wait: float = setting(
        "MUTATE_IDEMPOTENCY_WAIT_MS",
        120.0,
        unit="ms",
        help="How long a duplicate request waits for the first one with the "
        "same idempotency key to finish, in ms; after that the first one is "
        "presumed dead and its key taken over.",
    )
    requeue_after: float = setting(
        "MUTATE_REQUEUE_AFTER_MS",
        300.0,
        unit="ms",
        help="A pending job never handed to the queue (publish failed, or a "
        "replica died mid-request) is queued by the sweeper after this long, "
        "in ms. Must exceed MUTATE_TRANSFORM_TIMEOUT_MS.",
    )
    sweep_interval: float = setting(
        "MUTATE_SWEEP_INTERVAL_MS",
        10.0,
        unit="ms",
        help="How often the sweeper looks for unqueued jobs and expired "
        "idempotency keys, in ms.",
    )
    watch_poll_interval: float = setting(
        "MUTATE_WATCH_POLL_MS",
        2.0,
        unit="ms",
        help="How often WatchJob re-reads the job row besides following its "
        "events, in ms.",
    )
    projector_batch: int = setting(
        "MUTATE_PROJECTOR_BATCH", 256, help="Events fetched per projector pull."
    )
    projector_fetch_wait: float = setting(
        "MUTATE_PROJECTOR_FETCH_WAIT_MS",
        1.0,
        unit="ms",
        help="How long one projector pull waits for events, in ms.",
    )
    projector_retry_delay: float = setting(
        "MUTATE_PROJECTOR_RETRY_DELAY_MS",
        1.0,
        unit="ms",
        help="Redelivery delay of an event the projector could not apply, in ms.",
    )

    # Tenancy.
    rate_limit_per_second: float = setting(
        "MUTATE_RATE_LIMIT_PER_SECOND",
        200.0,
        help="Requests per second an organization may make (token bucket "
        "refill rate, per replica); 0 turns the limit off.",
    )
    rate_limit_burst: int = setting(
        "MUTATE_RATE_LIMIT_BURST",
        400,
        help="Requests an organization may make at once (bucket size).",
    )
    api_key_cache_ttl: float = setting(
        "MUTATE_API_KEY_CACHE_MS",
        5.0,
        unit="ms",
        help="How long a replica trusts a key it has looked up, in ms; a key "
        "revoked through another replica stops working within this time, and "
        "its last-used time is written at most this often.",
    )

    webhook_allowed_networks: tuple[str, ...] = setting(
        "WEBHOOK_ALLOWED_NETWORKS",
        (),
        help="Comma-separated networks (CIDR) webhook URLs may point to although "
        "private, e.g. 127.0.0.0/8 for the local platform; metadata addresses "
        "are always refused.",
    )

    # Presigned URLs.
    upload_url_ttl: float = setting(
        "MUTATE_UPLOAD_URL_TTL_MS",
        3_600.0,
        unit="ms",
        help="Default lifetime of a presigned upload URL, in ms.",
    )
    download_url_ttl: float = setting(
        "MUTATE_DOWNLOAD_URL_TTL_MS",
        _DAY,
        unit="ms",
        help="Default lifetime of a presigned download URL, in ms.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.http_port < 65536:
            raise SettingsError("MUTATE_HTTP_PORT must be a port number")
        if not self.database_url.strip():
            raise SettingsError("MUTATE_DATABASE_URL must be set")
        if not self.database_schema.isidentifier():
            raise SettingsError("MUTATE_DATABASE_SCHEMA must be a plain identifier")
        check_positive(
            MUTATE_DATABASE_POOL_MAX=self.database_pool_max,
            MUTATE_SYNC_CONCURRENCY=self.sync_concurrency,
            MUTATE_MAX_INPUT_BYTES=self.max_input_bytes,
            MUTATE_RPC_TIMEOUT_MS=self.rpc_timeout,
            MUTATE_TRANSFORM_TIMEOUT_MS=self.transform_timeout,
            MUTATE_PROJECTOR_BATCH=self.projector_batch,
            MUTATE_SWEEP_INTERVAL_MS=self.sweep_interval,
            MUTATE_WATCH_POLL_MS=self.watch_poll_interval,
        )
        if self.database_pool_min > self.database_pool_max:
            raise SettingsError(
                "MUTATE_DATABASE_POOL_MIN must not exceed MUTATE_DATABASE_POOL_MAX"
            )
        if self.sync_max_bytes > self.max_input_bytes:
            raise SettingsError(
                "MUTATE_SYNC_MAX_BYTES must not exceed MUTATE_MAX_INPUT_BYTES"
            )
        for name, value in (
            ("MUTATE_UPLOAD_URL_TTL_MS", self.upload_url_ttl),
            ("MUTATE_DOWNLOAD_URL_TTL_MS", self.download_url_ttl),
        ):
            if not 0 < value <= MAX_PRESIGN_SECONDS:
                raise SettingsError(f"{name} must be between 1 ms and 7 days")
        try:
            NetworkPolicy.from_strings(self.webhook_allowed_networks)
        except ValueError as exc:
            raise SettingsError(f"WEBHOOK_ALLOWED_NETWORKS: {exc}") from None
        if self.inline_input_max_bytes < 0:
            raise SettingsError("MUTATE_INLINE_INPUT_MAX_BYTES must not be negative")
        if self.rate_limit_per_second < 0 or self.rate_limit_burst < 0:
            raise SettingsError("the rate limit settings must not be negative")

    @property
    def http_address(self) -> str:
        return f"{self.http_host}:{self.http_port}"
