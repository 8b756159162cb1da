"""Server-Sent Events for WatchJob, and multipart uploads streamed to UploadJob."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from mutate.v1 import job_pb2

from .rest_fakes import RestStack, StackFactory

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def _frames(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each SSE frame; comment lines come as ("", comment)."""
    event = ""
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield "", line[1:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and (event or data):
            yield event, "\n".join(data)
            event, data = "", []


async def _create_job(stack: RestStack) -> str:
    response = await stack.client.post("/v1/jobs", json={"configurationId": "cfg_1"})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


# ---------------------------------------------------------------- SSE


async def test_rest_watch_streams_one_event_per_message(stack: RestStack) -> None:
    job_id = await _create_job(stack)
    stack.gateway.watch_states = [
        job_pb2.Job.PENDING,
        job_pb2.Job.RUNNING,
        job_pb2.Job.COMPLETED,
    ]

    async with stack.client.stream("GET", f"/v1/jobs/{job_id}:watch") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [frame async for frame in _frames(response)]

    assert [event for event, _ in frames] == ["job", "job", "job"]
    statuses = [json.loads(data)["status"] for _, data in frames]
    assert statuses == ["PENDING", "RUNNING", "COMPLETED"]
    assert json.loads(frames[0][1])["id"] == job_id


async def test_rest_watch_unknown_job_is_a_plain_404(stack: RestStack) -> None:
    response = await stack.client.get("/v1/jobs/job_missing:watch")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == 5


async def test_rest_watch_failure_after_start_is_an_error_event(
    stack: RestStack,
) -> None:
    stack.gateway.jobs["job_fail"] = job_pb2.Job(id="job_fail")

    async with stack.client.stream("GET", "/v1/jobs/job_fail:watch") as response:
        assert response.status_code == 200
        frames = [frame async for frame in _frames(response)]

    assert [event for event, _ in frames] == ["job", "job", "error"]
    error = json.loads(frames[-1][1])
    assert error["code"] == 14
    assert error["message"] == "event stream lost"


async def test_rest_watch_sends_keepalive_comments_while_idle(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(http_sse_keepalive=0.05)
    job_id = await _create_job(stack)
    stack.gateway.watch_states = []
    stack.gateway.watch_gate = asyncio.Event()

    async with stack.client.stream("GET", f"/v1/jobs/{job_id}:watch") as response:
        # Nothing to send yet: headers go out after one keepalive interval.
        assert response.status_code == 200
        frames = _frames(response)
        first = await anext(frames)
        assert first == ("", "keepalive")
        stack.gateway.watch_gate.set()
        rest = [frame async for frame in frames]

    assert all(event == "" for event, _ in rest)


async def test_rest_watch_client_disconnect_cancels_the_grpc_stream(
    stack: RestStack,
) -> None:
    job_id = await _create_job(stack)
    stack.gateway.watch_gate = asyncio.Event()

    async with stack.client.stream("GET", f"/v1/jobs/{job_id}:watch") as response:
        frames = _frames(response)
        assert (await anext(frames))[0] == "job"
    # The client closed the connection with the stream still open.

    await asyncio.wait_for(stack.gateway.watch_cancelled.wait(), 5)


async def test_rest_stopping_server_ends_open_watch_streams(
    stack: RestStack,
) -> None:
    job_id = await _create_job(stack)
    stack.gateway.watch_gate = asyncio.Event()

    async with stack.client.stream("GET", f"/v1/jobs/{job_id}:watch") as response:
        frames = _frames(response)
        # Both states the fake sends, so the stream is idle on its gate when
        # the server stops (not racing the second frame).
        seen = [(await anext(frames))[0] for _ in stack.gateway.watch_states]
        started = asyncio.get_running_loop().time()
        stopping = asyncio.create_task(stack.rest.stop(5.0))
        rest = [frame async for frame in frames]
        await stopping

    assert asyncio.get_running_loop().time() - started < 2.0
    assert seen == ["job", "job"]
    assert rest == []


# ---------------------------------------------------------------- multipart


async def test_rest_multipart_job_streams_the_file_in_chunks(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(http_upload_chunk_bytes=64 * 1024)
    content = bytes(range(256)) * 10_000  # 2.56 MB

    response = await stack.client.post(
        "/v1/jobs",
        data={
            "configurationId": "cfg_1",
            "mode": "ASYNC",
            "configurationVersion": "3",
            "clientReference": "ref-1",
        },
        files={"file": ("report.xlsx", content, "application/octet-stream")},
        headers={"Idempotency-Key": "multi-1"},
    )

    assert response.status_code == 200, response.text
    job = response.json()
    assert job["inputBytes"] == str(len(content))
    assert job["inputFileName"] == "report.xlsx"
    call = stack.gateway.last("UploadJob")
    assert call.request.configuration_id == "cfg_1"
    assert call.request.mode == job_pb2.Job.ASYNC
    assert call.request.configuration_version == 3
    assert call.request.client_reference == "ref-1"
    assert not call.request.file_content
    assert call.metadata["idempotency-key"] == "multi-1"
    assert stack.gateway.uploaded[job["id"]] == content
    assert len(stack.gateway.upload_chunks) == 40
    assert max(stack.gateway.upload_chunks) == 64 * 1024


async def test_rest_multipart_fields_after_the_file_and_explicit_name(
    stack: RestStack,
) -> None:
    body, content_type = _multipart(
        [
            ("file", "data.csv", b"a,b\n1,2\n"),
            ("file_name", None, b"renamed.csv"),
            ("configuration_id", None, b"cfg_2"),
        ]
    )

    response = await stack.client.post(
        "/v1/jobs", content=body, headers={"content-type": content_type}
    )

    assert response.status_code == 200, response.text
    call = stack.gateway.last("UploadJob")
    assert call.request.configuration_id == "cfg_2"
    assert call.request.file_name == "renamed.csv"
    assert stack.gateway.uploaded[response.json()["id"]] == b"a,b\n1,2\n"


async def test_rest_multipart_without_file_uses_create_job(stack: RestStack) -> None:
    body, content_type = _multipart(
        [("configurationId", None, b"cfg_1"), ("uploadId", None, b"upl_1")]
    )

    response = await stack.client.post(
        "/v1/jobs", content=body, headers={"content-type": content_type}
    )

    assert response.status_code == 200, response.text
    assert stack.gateway.last("CreateJob").request.upload_id == "upl_1"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"configurationId": "c", "colour": "red"}, "colour"),
        ({"configurationId": "c", "mode": "FAST"}, "mode"),
        ({"configurationId": "c", "fileContent": "abc"}, "fileContent"),
    ],
)
async def test_rest_multipart_bad_field_is_400_naming_it(
    stack: RestStack, fields: dict[str, str], named: str
) -> None:
    response = await stack.client.post(
        "/v1/jobs", data=fields, files={"file": ("x.csv", b"a\n")}
    )

    assert response.status_code == 400, response.text
    assert named in response.json()["message"]
    assert not [c for c in stack.gateway.calls if c.method == "UploadJob"]


async def test_rest_multipart_second_file_part_is_400(stack: RestStack) -> None:
    response = await stack.client.post(
        "/v1/jobs",
        data={"configurationId": "c"},
        files=[("file", ("a.csv", b"a\n")), ("file", ("b.csv", b"b\n"))],
    )

    assert response.status_code == 400
    assert "multipart" in response.json()["message"]


async def test_rest_multipart_over_the_upload_limit_is_413(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(http_max_upload_bytes=10_000)

    response = await stack.client.post(
        "/v1/jobs",
        data={"configurationId": "c"},
        files={"file": ("big.csv", b"x" * 20_000)},
    )

    assert response.status_code == 413
    assert response.json()["code"] == 8


async def test_rest_multipart_upload_error_maps_like_unary(stack: RestStack) -> None:
    response = await stack.client.post(
        "/v1/jobs",
        data={"configurationId": "c"},
        files={"file": ("a.csv", b"a\n")},
        headers={"x-api-key": "mk_wrong"},
    )

    assert response.status_code == 401
    assert response.json()["code"] == 16


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    boundary = "testboundary7MA4YWxk"
    out = bytearray()
    for name, filename, data in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n\r\n".encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
