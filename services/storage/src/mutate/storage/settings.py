"""Settings of the storage service, read once in `main` from the environment.

Provider variables follow ARCHITECTURE "Storage settings": `STORAGE_PROVIDER`
chooses between AWS S3, Cloudflare R2 and MinIO (or any S3-compatible
endpoint); R2 reads its own `CLOUDFLARE_R2_*` variables, the others `S3_*`.
`resolve_provider` turns either set into one `ProviderConfig`, so the rest of
the service never looks at which variables were used.
"""

from __future__ import annotations

import dataclasses
import urllib.parse

from mutate.common.service_settings import CommonSettings
from mutate.common.settings import SettingsError, check_positive, setting

# S3 refuses presigned URLs that live longer than this (SigV4 limit).
MAX_PRESIGN_TTL = 7 * 24 * 3600.0
# The smallest multipart part S3 accepts (except the last one).
MIN_PART_BYTES = 5 * 1024 * 1024
# A single CopyObject is limited to 5 GiB; the SHA-256 is recorded by one.
MAX_OBJECT_BYTES = 5 * 1024**3

PROVIDERS = ("s3", "r2", "minio")
# Defaults of `unit="ms"` fields are in the field's unit (seconds); the
# environment gives milliseconds.
ADDRESSING_STYLES = ("auto", "path", "virtual")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """host[:port] plus scheme, as the minio client takes them."""

    host: str
    secure: bool

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}"

    def __str__(self) -> str:
        return self.url


@dataclasses.dataclass(frozen=True)
class ProviderConfig:
    """Where the store is and how to sign for it, whichever provider."""

    provider: str
    endpoint: Endpoint
    public_endpoint: Endpoint
    access_key: str = dataclasses.field(repr=False)
    secret_key: str = dataclasses.field(repr=False)
    bucket: str
    region: str
    addressing_style: str
    # Names of the variables the credentials came from, for error messages.
    access_key_setting: str
    secret_key_setting: str
    bucket_setting: str


def parse_endpoint(value: str, *, secure: bool, setting_name: str) -> Endpoint:
    """`https://host:port`, `http://host` or bare `host:port` (then `secure`)."""
    text = value.strip()
    if "://" in text:
        parsed = urllib.parse.urlsplit(text)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SettingsError(f"{setting_name}={value!r} is not an http(s) URL")
        if parsed.path not in ("", "/") or parsed.query:
            raise SettingsError(
                f"{setting_name}={value!r} must not carry a path or query"
            )
        return Endpoint(host=parsed.netloc, secure=parsed.scheme == "https")
    if not text or "/" in text:
        raise SettingsError(f"{setting_name}={value!r} is not host[:port]")
    return Endpoint(host=text, secure=secure)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StorageSettings(CommonSettings):
    """Everything the storage service reads from its environment."""

    grpc_port: int = setting("MUTATE_GRPC_PORT", 50052, help="gRPC port.")

    provider: str = setting(
        "STORAGE_PROVIDER",
        "minio",
        help="`s3` (AWS), `r2` (Cloudflare R2) or `minio` (any S3-compatible).",
    )
    s3_endpoint: str = setting(
        "S3_ENDPOINT",
        "",
        help="host:port or URL of the store; empty for AWS means "
        "s3.<region>.amazonaws.com. Required for minio.",
    )
    s3_access_key_id: str = setting(
        "S3_ACCESS_KEY_ID", "", help="Access key id (s3, minio).", secret=True
    )
    s3_secret_access_key: str = setting(
        "S3_SECRET_ACCESS_KEY", "", help="Secret access key (s3, minio).", secret=True
    )
    s3_bucket: str = setting("S3_BUCKET", "mutate", help="Bucket (s3, minio).")
    s3_region: str = setting(
        "S3_REGION",
        "us-east-1",
        help="Region; also the signature scope, so no lookup call is made.",
    )
    s3_secure: bool = setting(
        "S3_SECURE",
        True,
        help="Use HTTPS when S3_ENDPOINT carries no scheme.",
    )
    s3_public_endpoint: str = setting(
        "S3_PUBLIC_ENDPOINT",
        "",
        help="host:port or URL clients reach the store at; presigned URLs are "
        "signed for this host. Empty: the service's own endpoint.",
    )
    s3_addressing_style: str = setting(
        "S3_ADDRESSING_STYLE",
        "auto",
        help="`path` (host/bucket/key), `virtual` (bucket.host/key) or `auto` "
        "(virtual for AWS, path elsewhere).",
    )

    r2_access_key_id: str = setting(
        "CLOUDFLARE_R2_ACCESS_KEY_ID", "", help="R2 access key id.", secret=True
    )
    r2_secret_access_key: str = setting(
        "CLOUDFLARE_R2_SECRET_ACCESS_KEY",
        "",
        help="R2 secret access key.",
        secret=True,
    )
    r2_bucket: str = setting("CLOUDFLARE_R2_BUCKET", "", help="R2 bucket.")
    r2_region: str = setting("CLOUDFLARE_R2_REGION", "auto", help="R2 region.")
    r2_endpoint: str = setting(
        "CLOUDFLARE_R2_ENDPOINT",
        "",
        help="https://<account id>.r2.cloudflarestorage.com",
    )

    presign_default_ttl: float = setting(
        "MUTATE_PRESIGN_DEFAULT_TTL_MS",
        24 * 3600.0,
        unit="ms",
        help="Lifetime of presigned URLs when a request names none, in ms.",
    )
    presign_max_ttl: float = setting(
        "MUTATE_PRESIGN_MAX_TTL_MS",
        MAX_PRESIGN_TTL,
        unit="ms",
        help="Longest lifetime a request may ask for, in ms (at most 7 days).",
    )
    create_bucket: bool = setting(
        "MUTATE_STORAGE_CREATE_BUCKET",
        True,
        help="Create the bucket at start-up when it is missing.",
    )
    max_object_bytes: int = setting(
        "MUTATE_STORAGE_MAX_OBJECT_BYTES",
        1024**3,
        help="Largest object accepted by a put or a presigned upload (≤ 5 GiB).",
    )
    part_bytes: int = setting(
        "MUTATE_STORAGE_PART_BYTES",
        8 * 1024 * 1024,
        help="Multipart part size (≥ 5 MiB); objects up to this size are "
        "buffered and sent in one PUT. Memory per put is about twice this.",
    )
    single_put_bytes: int = setting(
        "MUTATE_STORAGE_SINGLE_PUT_MAX_BYTES",
        5_000_000_000,
        help="Largest put whose sender declares its size and SHA-256 that is "
        "streamed to the store as one PUT while it arrives (S3 and R2 take at "
        "most 5 GiB in one PUT); larger ones go as multipart uploads, 0 = always.",
    )
    chunk_bytes: int = setting(
        "MUTATE_STORAGE_CHUNK_BYTES",
        1024 * 1024,
        help="Size of the chunks a get streams back.",
    )
    io_threads: int = setting(
        "MUTATE_STORAGE_IO_THREADS",
        32,
        help="Threads running blocking S3 calls, and as many again for "
        "streaming transfers (each large put or get holds one while it streams).",
    )
    connect_timeout: float = setting(
        "MUTATE_STORAGE_CONNECT_TIMEOUT_MS",
        5.0,
        unit="ms",
        help="TCP connect timeout to the store, in ms.",
    )
    read_timeout: float = setting(
        "MUTATE_STORAGE_READ_TIMEOUT_MS",
        60.0,
        unit="ms",
        help="Socket read timeout to the store, in ms.",
    )
    retries: int = setting(
        "MUTATE_STORAGE_RETRIES",
        2,
        help="Retries of one S3 request on connection errors and 5xx.",
    )
    retry_backoff: float = setting(
        "MUTATE_STORAGE_RETRY_BACKOFF_MS",
        0.2,
        unit="ms",
        help="Base of the exponential back-off between retries, in ms.",
    )
    startup_timeout: float = setting(
        "MUTATE_STORAGE_STARTUP_TIMEOUT_MS",
        30.0,
        unit="ms",
        help="How long start-up waits for the store to answer, in ms.",
    )

    retention_uploads: float = setting(
        "MUTATE_RETENTION_UPLOADS_MS",
        24 * 3600.0,
        unit="ms",
        help="Age after which presigned uploads are deleted, in ms; 0 keeps them.",
    )
    retention_input: float = setting(
        "MUTATE_RETENTION_INPUT_MS",
        7 * 24 * 3600.0,
        unit="ms",
        help="Age after which job inputs are deleted, in ms; 0 keeps them.",
    )
    retention_output: float = setting(
        "MUTATE_RETENTION_OUTPUT_MS",
        30 * 24 * 3600.0,
        unit="ms",
        help="Age after which job outputs are deleted, in ms; 0 keeps them.",
    )
    retention_sweep_interval: float = setting(
        "MUTATE_RETENTION_SWEEP_INTERVAL_MS",
        3600.0,
        unit="ms",
        help="How often expired objects are swept, in ms; 0 turns the sweep off.",
    )
    lifecycle_rules: bool = setting(
        "MUTATE_STORAGE_LIFECYCLE_RULES",
        True,
        help="Also install bucket lifecycle rules (whole days) at start-up.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.provider not in PROVIDERS:
            raise SettingsError(f"STORAGE_PROVIDER must be one of {PROVIDERS}")
        if self.s3_addressing_style not in ADDRESSING_STYLES:
            raise SettingsError(
                f"S3_ADDRESSING_STYLE must be one of {ADDRESSING_STYLES}"
            )
        if not 0 < self.presign_max_ttl <= MAX_PRESIGN_TTL:
            raise SettingsError("MUTATE_PRESIGN_MAX_TTL_MS must be within 7 days")
        if not 1 <= self.presign_default_ttl <= self.presign_max_ttl:
            raise SettingsError(
                "MUTATE_PRESIGN_DEFAULT_TTL_MS must be between 1 s and "
                "MUTATE_PRESIGN_MAX_TTL_MS"
            )
        if not 0 < self.max_object_bytes <= MAX_OBJECT_BYTES:
            raise SettingsError("MUTATE_STORAGE_MAX_OBJECT_BYTES must be ≤ 5 GiB")
        if self.part_bytes < MIN_PART_BYTES:
            raise SettingsError("MUTATE_STORAGE_PART_BYTES must be ≥ 5 MiB")
        if not 0 <= self.single_put_bytes <= MAX_OBJECT_BYTES:
            raise SettingsError(
                "MUTATE_STORAGE_SINGLE_PUT_MAX_BYTES must be between 0 and 5 GiB"
            )
        check_positive(
            MUTATE_STORAGE_CHUNK_BYTES=self.chunk_bytes,
            MUTATE_STORAGE_IO_THREADS=self.io_threads,
            MUTATE_STORAGE_CONNECT_TIMEOUT_MS=self.connect_timeout,
            MUTATE_STORAGE_READ_TIMEOUT_MS=self.read_timeout,
        )
        for name, value in (
            ("MUTATE_RETENTION_UPLOADS_MS", self.retention_uploads),
            ("MUTATE_RETENTION_INPUT_MS", self.retention_input),
            ("MUTATE_RETENTION_OUTPUT_MS", self.retention_output),
            ("MUTATE_RETENTION_SWEEP_INTERVAL_MS", self.retention_sweep_interval),
            ("MUTATE_STORAGE_RETRIES", self.retries),
        ):
            if value < 0:
                raise SettingsError(f"{name} must not be negative")
        # Resolving checks the provider's own variables at start-up.
        self.resolve_provider()

    def resolve_provider(self) -> ProviderConfig:
        """The endpoint, credentials and bucket of the chosen provider."""
        if self.provider == "r2":
            return self._r2()
        return self._s3_or_minio()

    def _r2(self) -> ProviderConfig:
        missing = [
            name
            for name, value in (
                ("CLOUDFLARE_R2_ACCESS_KEY_ID", self.r2_access_key_id),
                ("CLOUDFLARE_R2_SECRET_ACCESS_KEY", self.r2_secret_access_key),
                ("CLOUDFLARE_R2_BUCKET", self.r2_bucket),
                ("CLOUDFLARE_R2_ENDPOINT", self.r2_endpoint),
            )
            if not value
        ]
        if missing:
            raise SettingsError(f"STORAGE_PROVIDER=r2 needs {', '.join(missing)}")
        endpoint = parse_endpoint(
            self.r2_endpoint, secure=True, setting_name="CLOUDFLARE_R2_ENDPOINT"
        )
        return ProviderConfig(
            provider="r2",
            endpoint=endpoint,
            public_endpoint=self._public_endpoint(endpoint),
            access_key=self.r2_access_key_id,
            secret_key=self.r2_secret_access_key,
            bucket=self.r2_bucket,
            region=self.r2_region,
            # R2 serves both styles; path style needs no per-bucket DNS name.
            addressing_style=(
                "path"
                if self.s3_addressing_style == "auto"
                else self.s3_addressing_style
            ),
            access_key_setting="CLOUDFLARE_R2_ACCESS_KEY_ID",
            secret_key_setting="CLOUDFLARE_R2_SECRET_ACCESS_KEY",
            bucket_setting="CLOUDFLARE_R2_BUCKET",
        )

    def _s3_or_minio(self) -> ProviderConfig:
        missing = [
            name
            for name, value in (
                ("S3_ACCESS_KEY_ID", self.s3_access_key_id),
                ("S3_SECRET_ACCESS_KEY", self.s3_secret_access_key),
                ("S3_BUCKET", self.s3_bucket),
            )
            if not value
        ]
        if self.provider == "minio" and not self.s3_endpoint:
            missing.append("S3_ENDPOINT")
        if missing:
            raise SettingsError(
                f"STORAGE_PROVIDER={self.provider} needs {', '.join(missing)}"
            )
        endpoint = parse_endpoint(
            self.s3_endpoint or f"s3.{self.s3_region}.amazonaws.com",
            secure=self.s3_secure,
            setting_name="S3_ENDPOINT",
        )
        return ProviderConfig(
            provider=self.provider,
            endpoint=endpoint,
            public_endpoint=self._public_endpoint(endpoint),
            access_key=self.s3_access_key_id,
            secret_key=self.s3_secret_access_key,
            bucket=self.s3_bucket,
            region=self.s3_region,
            addressing_style=self.s3_addressing_style,
            access_key_setting="S3_ACCESS_KEY_ID",
            secret_key_setting="S3_SECRET_ACCESS_KEY",
            bucket_setting="S3_BUCKET",
        )

    def _public_endpoint(self, endpoint: Endpoint) -> Endpoint:
        if not self.s3_public_endpoint:
            return endpoint
        return parse_endpoint(
            self.s3_public_endpoint,
            secure=endpoint.secure,
            setting_name="S3_PUBLIC_ENDPOINT",
        )

    def retention_by_area(self) -> dict[str, float]:
        """Retention in seconds per key area; 0 means keep."""
        return {
            "uploads": self.retention_uploads,
            "input": self.retention_input,
            "output": self.retention_output,
        }
