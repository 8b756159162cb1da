"""Provider settings: R2, public endpoints and addressing (unit level).

R2 and the public hosts are not reachable here; presigning is pure CPU
(the region is always given), so the URLs are checked as produced.
"""

from __future__ import annotations

import urllib.parse

import pytest

from mutate.common.settings import SettingsError, load
from mutate.storage._store import S3Store, StoreOptions
from mutate.storage.settings import StorageSettings

OPTIONS = StoreOptions(
    part_bytes=5 * 1024 * 1024,
    single_put_bytes=5_000_000_000,
    chunk_bytes=1024 * 1024,
    io_threads=2,
    connect_timeout=0.5,
    read_timeout=0.5,
    retries=0,
    retry_backoff=0.0,
)

R2_ENV = {
    "STORAGE_PROVIDER": "r2",
    "CLOUDFLARE_R2_ACCESS_KEY_ID": "r2-key",
    "CLOUDFLARE_R2_SECRET_ACCESS_KEY": "r2-secret",
    "CLOUDFLARE_R2_BUCKET": "files",
    "CLOUDFLARE_R2_ENDPOINT": "https://0123abcd.r2.cloudflarestorage.com",
}
MINIO_ENV = {
    "STORAGE_PROVIDER": "minio",
    "S3_ENDPOINT": "127.0.0.1:9",
    "S3_ACCESS_KEY_ID": "key",
    "S3_SECRET_ACCESS_KEY": "s3cr3t-value",
    "S3_BUCKET": "mutate",
    "S3_SECURE": "false",
}


def _presigned(env: dict[str, str], method: str = "GET") -> urllib.parse.SplitResult:
    settings = load(StorageSettings, env)
    store = S3Store(config=settings.resolve_provider(), options=OPTIONS)
    try:
        signed = store.presign(method, "output/o/j/report.csv", ttl_seconds=60)
    finally:
        store.close()
    return urllib.parse.urlsplit(signed.url)


def _query(url: urllib.parse.SplitResult) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(url.query))


def test_settings_r2_signs_for_its_endpoint_with_region_auto() -> None:
    url = _presigned(R2_ENV)

    assert url.scheme == "https"
    assert url.netloc == "0123abcd.r2.cloudflarestorage.com"
    assert url.path == "/files/output/o/j/report.csv"
    credential = _query(url)["X-Amz-Credential"]
    assert credential.startswith("r2-key/")
    assert credential.endswith("/auto/s3/aws4_request")


def test_settings_r2_region_and_public_endpoint_are_settable() -> None:
    env = {
        **R2_ENV,
        "CLOUDFLARE_R2_REGION": "eeur",
        "S3_PUBLIC_ENDPOINT": "https://downloads.example.com",
    }

    url = _presigned(env)

    assert url.netloc == "downloads.example.com"
    assert _query(url)["X-Amz-Credential"].endswith("/eeur/s3/aws4_request")


def test_settings_r2_names_missing_variables() -> None:
    env = {k: v for k, v in R2_ENV.items() if k != "CLOUDFLARE_R2_ENDPOINT"}
    env.pop("CLOUDFLARE_R2_BUCKET")

    with pytest.raises(SettingsError, match="CLOUDFLARE_R2_BUCKET.*ENDPOINT"):
        load(StorageSettings, env)


def test_settings_public_endpoint_replaces_the_host_of_presigned_urls() -> None:
    env = {**MINIO_ENV, "S3_PUBLIC_ENDPOINT": "https://files.example.com:8443"}

    url = _presigned(env, "PUT")

    assert (url.scheme, url.netloc) == ("https", "files.example.com:8443")
    assert _query(url)["X-Amz-Credential"].endswith("/us-east-1/s3/aws4_request")


def test_settings_virtual_addressing_puts_the_bucket_in_the_host() -> None:
    env = {**MINIO_ENV, "S3_PUBLIC_ENDPOINT": "files.example.com"}

    path_style = _presigned(env)
    virtual = _presigned({**env, "S3_ADDRESSING_STYLE": "virtual"})

    assert path_style.netloc == "files.example.com"
    assert path_style.path == "/mutate/output/o/j/report.csv"
    assert virtual.netloc == "mutate.files.example.com"
    assert virtual.path == "/output/o/j/report.csv"


def test_settings_aws_defaults_to_the_regional_endpoint() -> None:
    env = {**MINIO_ENV, "STORAGE_PROVIDER": "s3", "S3_REGION": "eu-west-3"}
    del env["S3_ENDPOINT"], env["S3_SECURE"]

    config = load(StorageSettings, env).resolve_provider()
    url = _presigned(env)

    assert config.endpoint.url == "https://s3.eu-west-3.amazonaws.com"
    assert url.netloc == "mutate.s3.eu-west-3.amazonaws.com"
    assert _query(url)["X-Amz-Credential"].endswith("/eu-west-3/s3/aws4_request")


def test_settings_endpoint_scheme_wins_over_s3_secure() -> None:
    config = load(
        StorageSettings, {**MINIO_ENV, "S3_ENDPOINT": "https://store:9000"}
    ).resolve_provider()

    assert config.endpoint.secure is True
    assert config.endpoint.host == "store:9000"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MUTATE_PRESIGN_MAX_TTL_MS", str(8 * 24 * 3600 * 1000), "7 days"),
        ("MUTATE_PRESIGN_DEFAULT_TTL_MS", str(8 * 24 * 3600 * 1000), "DEFAULT_TTL"),
        ("MUTATE_STORAGE_PART_BYTES", "1024", "5 MiB"),
        ("STORAGE_PROVIDER", "gcs", "STORAGE_PROVIDER"),
        ("S3_ADDRESSING_STYLE", "dns", "S3_ADDRESSING_STYLE"),
        ("S3_ENDPOINT", "", "S3_ENDPOINT"),
        ("S3_ENDPOINT", "http://host/path", "S3_ENDPOINT"),
        ("S3_SECRET_ACCESS_KEY", "", "S3_SECRET_ACCESS_KEY"),
    ],
)
def test_settings_refuse_bad_values(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(StorageSettings, {**MINIO_ENV, name: value})


def test_settings_defaults() -> None:
    settings = load(StorageSettings, MINIO_ENV)

    assert settings.grpc_port == 50052
    assert settings.presign_default_ttl == 24 * 3600
    assert settings.presign_max_ttl == 7 * 24 * 3600
    assert settings.create_bucket is True
    assert "s3cr3t-value" not in repr(settings.resolve_provider())
