"""The `mutate` CLI and `MutateClient` against a real platform.

Every service runs as a subprocess (see conftest.py); the CLI runs as a user
runs it, in a subprocess, and is judged by its exit code and its output.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import threading
import uuid
import zlib
from pathlib import Path

import pytest
from google.protobuf import json_format

from mutate.client import MutateClient, WaitTimeout
from mutate.client.cli import ExitCode
from mutate.v1 import configuration_pb2, job_pb2

from .conftest import EXAMPLES, SYNC_MAX_BYTES, Cli, Platform, corpus_file

pytestmark = pytest.mark.slow

Job = job_pb2.Job
KANSAS = "kansas-csv-cleanup.json"
KANSAS_CSV = "csvkit_ks_1033_data.csv"
NEBRASKA = "equipment-report-to-json.json"
NEBRASKA_XLSX = "csvkit_ne_1033_data.xlsx"


def expected_output(example: str, input_path: Path) -> bytes:
    """What the engine makes of the file, converted here in-process."""
    from mutate.transformer.engine import convert

    configuration = configuration_pb2.Configuration()
    json_format.Parse((EXAMPLES / example).read_text(encoding="utf-8"), configuration)
    output = io.BytesIO()
    convert(input_path.read_bytes(), input_path.name, configuration, output)
    return output.getvalue()


def create_config(cli: Cli, example: str) -> str:
    result = cli("configs", "create", str(EXAMPLES / example), "--json")
    assert result.code == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["id"].startswith("cfg_") and created["version"] == "1"
    return str(created["id"])


def png_bytes() -> bytes:
    """A real 1×1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------ configurations


def test_configs_create_list_get_update_delete(cli: Cli) -> None:
    config_id = create_config(cli, KANSAS)

    listed = cli("configs", "list")
    assert listed.code == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "VERSION"]
    assert config_id in listed.stdout

    shown = cli("configs", "get", config_id)
    assert shown.code == 0 and "drop-allen" in shown.stdout

    updated = cli(
        "configs", "update", config_id, str(EXAMPLES / KANSAS),
        "--mask", "description,outputFormat", "--expected-version", "1", "--json",
    )  # fmt: skip
    assert updated.code == 0, updated.stderr
    assert json.loads(updated.stdout)["version"] == "2"

    stale = cli(
        "configs", "update", config_id, str(EXAMPLES / KANSAS),
        "--expected-version", "1",
    )  # fmt: skip
    assert stale.code == 3, stale.stderr
    assert "ABORTED" in stale.stderr

    versions = cli("configs", "versions", config_id, "--json")
    assert [v["version"] for v in json.loads(versions.stdout)["versions"]] == [
        "2",
        "1",
    ]

    assert cli("configs", "delete", config_id).code == 0
    gone = cli("configs", "get", config_id)
    assert gone.code == 4, gone.stderr


def test_configs_create_refuses_unknown_field_before_calling(
    cli: Cli, tmp_path: Path
) -> None:
    document = json.loads((EXAMPLES / KANSAS).read_text())
    document["rules"][0]["deleteRows"]["vaule"] = "x"
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(document))

    result = cli("configs", "create", str(path))

    assert result.code == 2
    assert "rules[0].deleteRows.vaule" in result.stderr
    assert "'value'" in result.stderr


def test_configs_create_invalid_rules_is_an_api_error(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "no type", "rules": []}))

    result = cli("configs", "create", str(path), "--json")

    assert result.code == 3
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["exitCode"] == 3


def test_configs_test_prints_before_after_and_log(cli: Cli, tmp_path: Path) -> None:
    config_id = create_config(cli, KANSAS)
    sample = tmp_path / "sample.csv"
    lines = corpus_file(KANSAS_CSV).read_bytes().splitlines(keepends=True)
    sample.write_bytes(b"".join(lines[:40]))

    result = cli("configs", "test", config_id, str(sample), "--rows", "3")

    assert result.code == 0, result.stderr
    assert "before: " in result.stdout and "after: " in result.stdout
    assert "execution log:" in result.stdout
    for rule in ("drop-allen", "drop-costs", "check"):
        assert rule in result.stdout


# ------------------------------------------------------------ jobs


def test_jobs_submit_wait_downloads_the_converted_file(
    cli: Cli, tmp_path: Path
) -> None:
    config_id = create_config(cli, NEBRASKA)
    source = corpus_file(NEBRASKA_XLSX)
    out = tmp_path / "out" / "weapons.json"
    out.parent.mkdir()  # -o makes no folders (see test_cli_unit)

    result = cli(
        "jobs", "submit", str(source), "--config", config_id,
        "--reference", "ref-1", "--wait", "--output", str(out),
    )  # fmt: skip

    assert result.code == 0, result.stderr
    assert out.read_bytes() == expected_output(NEBRASKA, source)
    assert "completed" in result.stdout and "ref-1" in result.stdout
    assert f"saved {out}" in result.stderr


def test_jobs_submit_async_queued_reports_progress_and_default_name(
    cli: Cli, tmp_path: Path
) -> None:
    config_id = create_config(cli, KANSAS)
    source = corpus_file(KANSAS_CSV)
    assert source.stat().st_size > SYNC_MAX_BYTES  # goes through the queue

    result = cli("jobs", "submit", str(source), "--config", config_id, "--wait")

    assert result.code == 0, result.stderr
    # Not a terminal: one plain line per change on stderr, ending completed.
    lines = [line for line in result.stderr.splitlines() if line.startswith("job_")]
    assert lines and lines[-1].endswith("completed")
    assert "\r" not in result.stderr
    written = [p for p in tmp_path.iterdir() if p.is_file()]
    assert len(written) == 1, written
    assert written[0].read_bytes() == expected_output(KANSAS, source)


def test_jobs_submit_never_saves_over_its_input(cli: Cli, tmp_path: Path) -> None:
    # A CSV-to-CSV output is named as its input, in the input's folder here.
    config_id = create_config(cli, KANSAS)
    lines = corpus_file(KANSAS_CSV).read_bytes().splitlines(keepends=True)
    source = tmp_path / "data.csv"
    source.write_bytes(b"".join(lines[:40]))
    original = source.read_bytes()

    result = cli("jobs", "submit", "data.csv", "--config", config_id, "--wait")

    assert result.code == 0, result.stderr
    assert source.read_bytes() == original
    saved = tmp_path / "data (1).csv"
    assert "saved data (1).csv" in result.stderr
    assert saved.read_bytes() == expected_output(KANSAS, source)


def test_jobs_submit_of_a_png_named_xlsx_fails_with_the_reason(
    cli: Cli, tmp_path: Path
) -> None:
    config_id = create_config(cli, NEBRASKA)
    fake = tmp_path / "report.xlsx"
    fake.write_bytes(png_bytes())

    result = cli("jobs", "submit", str(fake), "--config", config_id, "--wait")

    assert result.code == 1, result.stderr
    assert "failed" in result.stderr
    job_id = result.stderr.split("mutate: job ", 1)[1].split()[0]
    shown = cli("jobs", "get", job_id, "--json")
    error = json.loads(shown.stdout)["error"]
    assert error["code"] and error["code"] in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".json"]

    # To stdout: a failed job leaves stdout empty, the reason on stderr.
    piped = cli("jobs", "submit", str(fake), "--config", config_id, "-o", "-")
    assert piped.code == 1, piped.stderr
    assert piped.stdout == ""
    assert error["code"] in piped.stderr


def test_jobs_get_list_download_deliveries(
    cli: Cli, platform: Platform, tmp_path: Path
) -> None:
    config_id = create_config(cli, KANSAS)
    source = corpus_file(KANSAS_CSV)
    submitted = cli(
        "jobs", "submit", str(source), "--config", config_id, "--wait",
        "--no-download", "--json",
    )  # fmt: skip
    assert submitted.code == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]

    listed = cli("jobs", "list", "--status", "completed", "--json")
    assert job_id in [j["id"] for j in json.loads(listed.stdout)["jobs"]]
    assert job_id in cli("jobs", "list").stdout

    piped = cli("jobs", "download", job_id, "--output", "-")
    assert piped.code == 0
    assert piped.stdout.encode() == expected_output(KANSAS, source)

    # `mutate jobs download ID -o - | head`: the reader leaves early.
    closed_early = cli.popen("jobs", "download", job_id, "--output", "-")
    assert closed_early.stdout is not None and closed_early.stderr is not None
    closed_early.stdout.close()
    assert closed_early.wait(timeout=60) == ExitCode.OUTPUT_CLOSED
    assert b"Traceback" not in closed_early.stderr.read()

    # Into a FIFO, as `-o >(cmd)` gives: written into, not replaced.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(
        target=lambda: received.append(fifo.read_bytes()), daemon=True
    )
    reader.start()
    into_fifo = cli("jobs", "download", job_id, "-o", str(fifo))
    reader.join(timeout=30)
    assert into_fifo.code == 0, into_fifo.stderr
    assert received == [expected_output(KANSAS, source)]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)

    # Through a symlink: its target gets the file, the link stays.
    link = tmp_path / "link.csv"
    link.symlink_to("target.csv")
    linked = cli("jobs", "download", job_id, "-o", str(link))
    assert linked.code == 0, linked.stderr
    assert (tmp_path / "target.csv").read_bytes() == expected_output(KANSAS, source)
    assert link.is_symlink()

    url = cli("jobs", "download", job_id, "--url-only")
    assert url.code == 0 and url.stdout.startswith("http")

    deliveries = cli("jobs", "deliveries", job_id)
    if platform.notifier:
        assert deliveries.code == 0, deliveries.stderr
        assert deliveries.stdout.split()[0] == "ID"


def test_jobs_cancel_then_retry(cli: Cli, client: MutateClient) -> None:
    config_id = create_config(cli, KANSAS)
    # Submitted in-process, so the cancel lands within the engine's delay.
    job = client.submit(corpus_file(KANSAS_CSV), config_id, mode="async")

    cancelled = cli("jobs", "cancel", job.id, "--json")
    assert cancelled.code == 0, cancelled.stderr
    waited = cli("jobs", "wait", job.id, "--wait-timeout", "30")
    assert waited.code == 1 and "cancelled" in waited.stderr

    retried = cli("jobs", "retry", job.id, "--json")
    assert retried.code == 0, retried.stderr
    assert json.loads(retried.stdout)["attempt"] == 2
    finished = cli("jobs", "wait", job.id, "--no-download", "--json")
    assert finished.code == 0, finished.stderr
    assert json.loads(finished.stdout)["status"] == "COMPLETED"


def test_errors_map_to_documented_exit_codes(cli: Cli, tmp_path: Path) -> None:
    wrong_key = cli("jobs", "list", api_key="mk_not_a_real_key")
    assert wrong_key.code == 5, wrong_key.stderr
    assert "UNAUTHENTICATED" in wrong_key.stderr

    missing = cli("jobs", "get", "job_doesnotexist")
    assert missing.code == 4, missing.stderr

    unknown_config = cli(
        "jobs", "submit", str(corpus_file(KANSAS_CSV)), "--config", "cfg_nope"
    )
    assert unknown_config.code == 4, unknown_config.stderr

    usage = cli("jobs", "submit", str(tmp_path / "absent.csv"), "--config", "x")
    assert usage.code == 2 and "absent.csv" in usage.stderr


def test_queue_stats(cli: Cli) -> None:
    human = cli("queue", "stats")
    assert human.code == 0, human.stderr
    assert "waiting:" in human.stdout
    assert "your organization" in human.stdout

    machine = cli("queue", "stats", "--json")
    assert machine.code == 0
    # A tenant key sees its own figures (proto3 JSON omits the false flag).
    assert json.loads(machine.stdout).get("allOrganizations", False) is False


# ------------------------------------------------------------ the library


@pytest.fixture
def client(platform: Platform, api_key: str) -> MutateClient:
    with MutateClient(platform.address, api_key, timeout=20) as client:
        yield client  # type: ignore[misc]


def _config_id(client: MutateClient, example: str) -> str:
    from mutate.client import load_configuration

    return client.create_configuration(load_configuration(EXAMPLES / example)).id


@pytest.mark.parametrize(
    ("inline_max", "stream_max", "path"),
    [
        (1 << 30, 1 << 30, "inline"),
        (1024, 1 << 30, "streamed"),
        (1024, 2048, "presigned"),
    ],
)
def test_client_submit_paths_give_the_same_output(
    platform: Platform,
    api_key: str,
    tmp_path: Path,
    inline_max: int,
    stream_max: int,
    path: str,
) -> None:
    source = corpus_file(NEBRASKA_XLSX)
    with MutateClient(
        platform.address,
        api_key,
        inline_max_bytes=inline_max,
        stream_max_bytes=stream_max,
        chunk_bytes=8192,
    ) as client:
        config_id = _config_id(client, NEBRASKA)
        job = client.submit(source, config_id, mode="async")
        assert job.input_bytes == source.stat().st_size, path
        seen: list[int] = []
        final = client.wait(job.id, on_update=lambda j: seen.append(j.status))
        assert final.status == Job.COMPLETED, final.error
        assert seen[-1] == Job.COMPLETED
        saved = client.download(job.id, directory=tmp_path)
    assert saved.name == final.output_file_name
    assert saved.read_bytes() == expected_output(NEBRASKA, source)


def test_client_submit_with_one_key_makes_one_job(client: MutateClient) -> None:
    config_id = _config_id(client, KANSAS)
    data = corpus_file(KANSAS_CSV).read_bytes()[:4000]
    key = f"test-{uuid.uuid4()}"

    first = client.submit(data, config_id, file_name="a.csv", idempotency_key=key)
    second = client.submit(data, config_id, file_name="a.csv", idempotency_key=key)
    third = client.submit(data, config_id, file_name="a.csv")

    assert first.id == second.id
    assert third.id != first.id


def test_client_wait_timeout_returns_the_last_state(client: MutateClient) -> None:
    config_id = _config_id(client, KANSAS)
    job = client.submit(corpus_file(KANSAS_CSV), config_id, mode="async")

    with pytest.raises(WaitTimeout) as caught:
        client.wait(job.id, timeout=0.05)

    assert caught.value.job.id == job.id
    assert client.wait(job.id, timeout=30).status == Job.COMPLETED
