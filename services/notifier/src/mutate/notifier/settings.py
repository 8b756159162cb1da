"""The notifier's settings, read once in `main` from the environment.

Durations are float seconds in code (and in the defaults below) and
milliseconds in the environment (`unit="ms"`).

The webhook variables keep the original platform's names and units
(WEBHOOK_TIMEOUT in ms, WEBHOOK_MAX_RETRIES as total tries); docs/webhooks.md
lists them all.
"""

from __future__ import annotations

import dataclasses

from mutate.common import netguard, webhooks
from mutate.common.service_settings import CommonSettings, NatsSettings
from mutate.common.settings import SettingsError, check_positive, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class NotifierSettings(CommonSettings, NatsSettings):
    """Everything `mutate-notifier` reads from its environment."""

    grpc_port: int = setting("MUTATE_GRPC_PORT", 50054, help="gRPC port.")
    database_url: str = setting(
        "MUTATE_DATABASE_URL",
        help="PostgreSQL conninfo; the notifier keeps its tables in schema `notifier`.",
        secret=True,
    )
    database_pool_size: int = setting(
        "MUTATE_DATABASE_POOL_SIZE", 8, help="Connections in the pool."
    )
    storage_address: str = setting(
        "MUTATE_STORAGE_ADDRESS",
        "127.0.0.1:50052",
        help="host:port of the storage service (fresh download URLs).",
    )
    storage_timeout: float = setting(
        "MUTATE_STORAGE_TIMEOUT_MS",
        5.0,
        unit="ms",
        help="Deadline of a presign call to storage, in ms.",
    )
    secret_encryption_key: str = setting(
        "MUTATE_SECRET_ENCRYPTION_KEY",
        "",
        secret=True,
        help="Base64 of a 32-byte key (comma-separated list: the first "
        "encrypts, all decrypt) that encrypts signing secrets at rest "
        "(AES-256-GCM). Empty stores them in clear, with a warning.",
    )

    webhook_timeout: float = setting(
        "WEBHOOK_TIMEOUT",
        30.0,
        unit="ms",
        help="How long one webhook try may take, connect to last byte, in ms.",
    )
    webhook_max_retries: int = setting(
        "WEBHOOK_MAX_RETRIES",
        5,
        help="Tries of one webhook in total, the first included; then it is "
        "dead-lettered.",
    )
    webhook_secret: str = setting(
        "WEBHOOK_SECRET",
        "",
        secret=True,
        help="`whsec_…` secret that signs for organizations without their own "
        "(installations without per-tenant secrets).",
    )
    webhook_allowed_networks: tuple[str, ...] = setting(
        "WEBHOOK_ALLOWED_NETWORKS",
        default_factory=tuple,
        help="Comma-separated CIDRs that webhooks may reach although private "
        "(the local platform: 127.0.0.0/8,::1/128). Metadata addresses are "
        "refused regardless.",
    )
    webhook_backoff_base: float = setting(
        "WEBHOOK_BACKOFF_BASE_MS",
        10.0,
        unit="ms",
        help="Delay before the second try, in ms.",
    )
    webhook_backoff_factor: float = setting(
        "WEBHOOK_BACKOFF_FACTOR",
        6.0,
        help="Each further delay is this many times the previous one.",
    )
    webhook_backoff_max: float = setting(
        "WEBHOOK_BACKOFF_MAX_MS",
        3600.0,
        unit="ms",
        help="Longest delay between tries (also caps Retry-After), in ms.",
    )
    webhook_backoff_jitter: float = setting(
        "WEBHOOK_BACKOFF_JITTER",
        0.2,
        help="Fraction (0-1) by which a delay is shortened at random, so "
        "retries of many messages spread out.",
    )
    webhook_concurrency: int = setting(
        "WEBHOOK_CONCURRENCY",
        32,
        help="Webhook tries in flight at once in one notifier process.",
    )
    webhook_endpoint_concurrency: int = setting(
        "WEBHOOK_ENDPOINT_CONCURRENCY",
        8,
        help="Tries in flight at once to one endpoint (scheme, host, port), "
        "so one slow receiver cannot take every slot.",
    )
    webhook_poll_interval: float = setting(
        "WEBHOOK_POLL_INTERVAL_MS",
        0.5,
        unit="ms",
        help="How often due deliveries are looked for, in ms (new events and "
        "finished tries also wake the scheduler at once).",
    )
    webhook_response_excerpt_bytes: int = setting(
        "WEBHOOK_RESPONSE_EXCERPT_BYTES",
        1024,
        help="How much of a receiver's response body is read and kept.",
    )
    webhook_rotation_overlap: float = setting(
        "WEBHOOK_ROTATION_OVERLAP_MS",
        24 * 3600.0,
        unit="ms",
        help="How long the previous secret keeps signing after a rotation, in ms.",
    )
    webhook_secret_cache: float = setting(
        "WEBHOOK_SECRET_CACHE_MS",
        5.0,
        unit="ms",
        help="How long a notifier reuses an organization's secrets before "
        "reading them again (rotations by another replica), in ms.",
    )
    webhook_event_batch: int = setting(
        "WEBHOOK_EVENT_BATCH",
        256,
        help="Job events fetched from JetStream at once.",
    )
    webhook_fetch_wait: float = setting(
        "WEBHOOK_FETCH_WAIT_MS",
        1.0,
        unit="ms",
        help="How long one fetch waits for job events, in ms.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(
            WEBHOOK_TIMEOUT=self.webhook_timeout,
            WEBHOOK_MAX_RETRIES=self.webhook_max_retries,
            WEBHOOK_BACKOFF_BASE_MS=self.webhook_backoff_base,
            WEBHOOK_BACKOFF_MAX_MS=self.webhook_backoff_max,
            WEBHOOK_CONCURRENCY=self.webhook_concurrency,
            WEBHOOK_ENDPOINT_CONCURRENCY=self.webhook_endpoint_concurrency,
            WEBHOOK_POLL_INTERVAL_MS=self.webhook_poll_interval,
            WEBHOOK_RESPONSE_EXCERPT_BYTES=self.webhook_response_excerpt_bytes,
            WEBHOOK_EVENT_BATCH=self.webhook_event_batch,
            WEBHOOK_FETCH_WAIT_MS=self.webhook_fetch_wait,
            MUTATE_DATABASE_POOL_SIZE=self.database_pool_size,
        )
        if self.webhook_backoff_factor < 1:
            raise SettingsError("WEBHOOK_BACKOFF_FACTOR must be at least 1")
        if not 0 <= self.webhook_backoff_jitter < 1:
            raise SettingsError("WEBHOOK_BACKOFF_JITTER must be in [0, 1)")
        if self.webhook_rotation_overlap < 0:
            raise SettingsError("WEBHOOK_ROTATION_OVERLAP_MS must not be negative")
        if self.webhook_secret:
            try:
                webhooks.secret_key(self.webhook_secret)
            except ValueError:
                raise SettingsError(
                    "WEBHOOK_SECRET must be whsec_ followed by base64"
                ) from None
        try:
            _ = self.network_policy
        except ValueError as exc:
            raise SettingsError(f"WEBHOOK_ALLOWED_NETWORKS: {exc}") from None

    @property
    def network_policy(self) -> netguard.NetworkPolicy:
        return netguard.NetworkPolicy.from_strings(self.webhook_allowed_networks)
