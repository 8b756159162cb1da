"""Helpers for the end-to-end tests: the corpus, the offline CLI, the API.

The platform comes from `mutate.devstack.harness`; what is here is what the
end-to-end tests do with it as an API user would: save a configuration, run
a job, follow it, download its output over the presigned URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
from google.protobuf import json_format

from mutate.devstack import stack as stk
from mutate.v1 import configuration_pb2, job_pb2, public_api_pb2, public_api_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS_VARIABLE = "MUTATE_CORPUS_DIR"
TERMINAL = {
    job_pb2.Job.COMPLETED,
    job_pb2.Job.FAILED,
    job_pb2.Job.CANCELLED,
    job_pb2.Job.DEAD_LETTERED,
}


def corpus_dir() -> Path:
    """The shared corpus: MUTATE_CORPUS_DIR, else `../shared/corpus` beside
    the checkout. Raises (never skips) when it is not there."""
    configured = os.environ.get(CORPUS_VARIABLE)
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "corpus"
    if not (path / "files").is_dir():
        raise FileNotFoundError(
            f"the test corpus is missing: no {path / 'files'}; set "
            f"{CORPUS_VARIABLE} to the folder holding files/ and MANIFEST.tsv"
        )
    return path


def tool(name: str) -> str:
    """A console script of this interpreter's environment."""
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is not installed (make install)")
    return str(path)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a conversion gave: the bytes, or the error code."""

    ok: bool
    data: bytes = b""
    error_code: str = ""
    detail: str = ""


def offline_convert(source: Path, config: Path, output: Path) -> Outcome:
    """`mutate-transformer convert SOURCE --config CONFIG --output OUTPUT`."""
    result = subprocess.run(
        [tool("mutate-transformer"), "convert", str(source), "--config", str(config)]
        + ["--output", str(output)],
        env=stk.clean_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode == 0:
        return Outcome(ok=True, data=output.read_bytes())
    # "mutate-transformer convert: CODE: message" (exit 1), see its docstring.
    line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    parts = line.split(": ", 2)
    if result.returncode != 1 or len(parts) < 3:
        raise AssertionError(
            f"offline convert of {source.name} exited {result.returncode}: "
            f"{result.stderr}"
        )
    return Outcome(ok=False, error_code=parts[1], detail=parts[2])


def load_configuration(path: Path) -> configuration_pb2.Configuration:
    configuration = configuration_pb2.Configuration()
    json_format.Parse(path.read_text(encoding="utf-8"), configuration)
    return configuration


class Api:
    """A tenant's view of the public gRPC API, as a user's program has it."""

    def __init__(self, channel: grpc.aio.Channel, api_key: str) -> None:
        self.metadata = (("authorization", f"Bearer {api_key}"),)
        self.configurations = public_api_pb2_grpc.ConfigurationServiceStub(channel)
        self.jobs = public_api_pb2_grpc.JobServiceStub(channel)
        self.http = httpx.AsyncClient(timeout=30.0)

    async def close(self) -> None:
        await self.http.aclose()

    async def create_configuration(
        self, configuration: configuration_pb2.Configuration
    ) -> str:
        saved = await self.configurations.CreateConfiguration(
            public_api_pb2.CreateConfigurationRequest(configuration=configuration),
            metadata=self.metadata,
            timeout=30,
        )
        return str(saved.id)

    async def submit(
        self,
        configuration_id: str,
        data: bytes,
        file_name: str,
        *,
        mode: job_pb2.Job.Mode.ValueType,
        webhook_url: str = "",
    ) -> job_pb2.Job:
        return await self.jobs.CreateJob(
            public_api_pb2.CreateJobRequest(
                configuration_id=configuration_id,
                file_content=data,
                file_name=file_name,
                mode=mode,
                webhook_url=webhook_url,
            ),
            metadata=self.metadata,
            timeout=120,
        )

    async def wait(self, job: job_pb2.Job, *, timeout: float = 120.0) -> job_pb2.Job:
        """Follow the job with WatchJob until it ends."""
        if job.status in TERMINAL:
            return job
        async with asyncio.timeout(timeout):
            while True:
                call = self.jobs.WatchJob(
                    public_api_pb2.WatchJobRequest(id=job.id), metadata=self.metadata
                )
                async for state in call:
                    job = state
                    if job.status in TERMINAL:
                        return job
                # The stream ended without a terminal state: look again.
                await asyncio.sleep(0.2)

    async def download(self, job_id: str) -> bytes:
        reply = await self.jobs.GetJobDownload(
            public_api_pb2.GetJobDownloadRequest(id=job_id),
            metadata=self.metadata,
            timeout=30,
        )
        response = await self.http.get(reply.url)
        response.raise_for_status()
        return response.content

    async def outcome(self, job: job_pb2.Job) -> Outcome:
        """The finished job as an Outcome (downloading a completed one)."""
        if job.status == job_pb2.Job.COMPLETED:
            return Outcome(ok=True, data=await self.download(job.id))
        if job.status == job_pb2.Job.FAILED:
            return Outcome(
                ok=False, error_code=job.error.code, detail=job.error.message
            )
        raise AssertionError(
            f"job {job.id} ended {job_pb2.Job.Status.Name(job.status)}: {job}"
        )
