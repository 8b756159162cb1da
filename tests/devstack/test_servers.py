"""The real servers: they answer, restart with their data, stop completely."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from typing import Any

import nats
import psutil
import psycopg
import pytest
from minio import Minio
from minio.error import S3Error

from mutate.devstack import _proc
from mutate.devstack.servers import NatsServer, PostgresServer, S3Server, ServerState

from .helpers import LOOPBACK, alive, listening_addresses, remote_addresses, wait_gone


async def _publish_and_count(url: str, *, publish: bool) -> int:
    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = client.jetstream()
        if publish:
            await js.add_stream(name="KEEP", subjects=["keep.>"])
            await js.publish("keep.one", b"1")
        info = await js.stream_info("KEEP")
        return int(info.state.messages)
    finally:
        await client.close()


async def test_nats_server_restart_keeps_streams(make_nats_server: Any) -> None:
    server: NatsServer = make_nats_server()
    port = server.port
    assert await _publish_and_count(server.url, publish=True) == 1

    server.restart()
    assert server.port == port
    assert await _publish_and_count(server.url, publish=False) == 1

    server.kill()
    server.start()
    assert await _publish_and_count(server.url, publish=False) == 1

    pid = server.pid
    assert pid is not None
    server.stop()
    assert server.state is ServerState.STOPPED
    assert wait_gone([pid]) == []


def test_nats_server_has_jetstream_limits_and_binds_loopback(
    make_nats_server: Any,
) -> None:
    monitor_port = _proc.free_port()
    server: NatsServer = make_nats_server(
        monitor_port=monitor_port, max_memory_store="64MB", max_file_store="128MB"
    )
    assert server.pid is not None
    addresses = listening_addresses(server.pid)
    assert addresses == {(LOOPBACK, server.port), (LOOPBACK, monitor_port)}

    with urllib.request.urlopen(f"{server.monitor_url}/jsz", timeout=5) as reply:
        config = json.load(reply)["config"]
    assert config["max_memory"] == 64 * 1024 * 1024
    assert config["max_storage"] == 128 * 1024 * 1024


def test_s3_server_refuses_unsigned_and_wrongly_signed_requests(
    s3_server: S3Server, s3_client: Minio, bucket: str
) -> None:
    s3_client.put_object(bucket, "secret.txt", io.BytesIO(b"data"), 4)

    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{s3_server.url}/{bucket}/secret.txt", timeout=5)
    assert anonymous.value.code == 403

    wrong = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key="not-the-secret",
        secure=False,
        region=s3_server.region,
    )
    with pytest.raises(S3Error) as refused:
        wrong.get_object(bucket, "secret.txt")
    assert refused.value.code in ("SignatureDoesNotMatch", "AccessDenied")

    unknown = Minio(
        s3_server.endpoint,
        access_key="nobody",
        secret_key="nothing-at-all",
        secure=False,
        region=s3_server.region,
    )
    with pytest.raises(S3Error):
        unknown.list_buckets()

    assert s3_client.get_object(bucket, "secret.txt").read() == b"data"


def test_s3_server_binds_loopback_on_its_ports_without_telemetry(
    s3_server: S3Server,
) -> None:
    assert s3_server.pid is not None
    addresses = listening_addresses(s3_server.pid)
    assert {ip for ip, _ in addresses} == {LOOPBACK}
    # Every listening port is one we chose: nothing fell back to a default.
    chosen = set(vars(s3_server.ports).values())
    assert {port for _, port in addresses} <= chosen
    assert s3_server.ports.s3 in {port for _, port in addresses}
    # No connection to anything but loopback (telemetry would reach out).
    assert remote_addresses(s3_server.pid) <= {LOOPBACK}
    assert "-master.telemetry=false" in psutil.Process(s3_server.pid).cmdline()
    assert "telemetry.seaweedfs.com" not in s3_server.log_path.read_text()


@pytest.mark.slow
def test_s3_server_restart_keeps_objects(make_s3_server: Any) -> None:
    server: S3Server = make_s3_server()
    server.ensure_bucket("keep")
    server.client().put_object("keep", "a/b.txt", io.BytesIO(b"kept"), 4)

    server.restart()
    assert server.client().get_object("keep", "a/b.txt").read() == b"kept"

    server.kill()
    server.start()
    assert server.client().get_object("keep", "a/b.txt").read() == b"kept"

    pid = server.pid
    assert pid is not None
    server.stop()
    assert wait_gone([pid]) == []
    assert list((server.data_dir / "sockets").glob("*.sock")) == []


def _count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM kept").fetchone()
    assert row is not None
    return int(row[0])


def test_postgres_server_restart_keeps_tables(make_postgres_server: Any) -> None:
    server: PostgresServer = make_postgres_server()
    url = server.create_database("app")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (1)")

    server.restart()
    assert _count_rows(url) == 1

    server.kill()
    server.start()
    assert _count_rows(url) == 1

    pid = server.pid
    assert pid is not None
    assert listening_addresses(pid) == set()  # Unix socket only, no TCP
    server.stop()
    assert server.state is ServerState.STOPPED
    assert wait_gone([pid]) == []
    assert server.pid is None


def test_database_url_is_a_fresh_database(
    database_url: str, postgres_server: PostgresServer
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = 'public'"
        ).fetchone()
        conn.execute("CREATE TABLE mine (id int)")
    assert tables == (0,)
    assert postgres_server.pid is not None
    assert alive(postgres_server.pid)


async def test_jetstream_fixture_gives_a_working_context(jetstream: Any) -> None:
    await jetstream.add_stream(name="FIXTURE", subjects=["fixture.>"])
    ack = await jetstream.publish("fixture.x", b"x")
    assert ack.stream == "FIXTURE"
