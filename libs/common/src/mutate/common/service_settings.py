"""Settings every service shares; each service's settings class extends these.

Subclasses redeclare a field to change its default (each service has its own
default port). Variables keep one name across services because each service
runs in its own process or pod with its own environment.
"""

from __future__ import annotations

import dataclasses

from mutate.common.settings import SettingsError, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommonSettings:
    """Serving, logging and shutdown."""

    grpc_host: str = setting(
        "MUTATE_GRPC_HOST",
        "127.0.0.1",
        help="Address the gRPC server binds; 0.0.0.0 in a container.",
    )
    grpc_port: int = setting("MUTATE_GRPC_PORT", 50051, help="gRPC port.")
    log_level: str = setting("MUTATE_LOG_LEVEL", "INFO", help="Root log level.")
    log_format: str = setting(
        "MUTATE_LOG_FORMAT",
        "json",
        help="`json` (one object a line, for production) or `text` (terminals).",
    )
    shutdown_grace: float = setting(
        "MUTATE_SHUTDOWN_GRACE_MS",
        10.0,
        unit="ms",
        help="How long in-flight work may finish after SIGTERM, in ms.",
    )
    metrics_port: int = setting(
        "MUTATE_METRICS_PORT",
        0,
        help="Prometheus scrape port; 0 turns the endpoint off.",
    )

    def __post_init__(self) -> None:
        if self.log_format not in ("json", "text"):
            raise SettingsError("MUTATE_LOG_FORMAT must be json or text")
        if not 0 < self.grpc_port < 65536:
            raise SettingsError("MUTATE_GRPC_PORT must be a port number")
        if self.shutdown_grace < 0:
            raise SettingsError("MUTATE_SHUTDOWN_GRACE_MS must not be negative")

    @property
    def grpc_address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class NatsSettings:
    """How a service reaches NATS JetStream."""

    nats_url: str = setting(
        "MUTATE_NATS_URL",
        "nats://127.0.0.1:4222",
        help="NATS server URL(s), comma-separated; may carry credentials.",
        secret=True,
    )
    nats_connect_timeout: float = setting(
        "MUTATE_NATS_CONNECT_TIMEOUT_MS",
        5.0,
        unit="ms",
        help="How long to wait for NATS at start-up, in ms.",
    )
