"""Every corpus file through the whole platform equals the offline CLI's output.

For each file of the shared corpus there is a configuration with rules chosen
for that file (`configurations/<file>.json`: a sheet selected, merges
unmerged where it has some, rows and columns deleted, characters replaced;
the Nebraska workbook uses the shipped example). Each is saved through the
public gRPC API and run twice, SYNC and ASYNC (queued), on one platform of
four service subprocesses on real NATS, S3 and PostgreSQL. The downloaded
output must equal, byte for byte, what `mutate-transformer convert` writes
for the same file and configuration; a file the CLI cannot convert must fail
on the platform with the same error code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mutate.devstack.harness import PlatformHarness, start_platform
from mutate.v1 import job_pb2

from .support import REPO_ROOT, Api, Outcome, corpus_dir, load_configuration
from .support import offline_convert as convert_offline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

HERE = Path(__file__).parent
CONFIGURATIONS = HERE / "configurations"
# Corpus files whose configuration is one of the shipped examples.
EXAMPLE_CONFIGURATIONS = {
    "csvkit_ne_1033_data.xlsx": REPO_ROOT
    / "examples"
    / "configurations"
    / "equipment-report-to-json.json",
}
MODES = {"sync": job_pb2.Job.SYNC, "async": job_pb2.Job.ASYNC}
# Files that must fail, offline and on the platform alike (and why).
EXPECTED_FAILURES = {
    # Sheet2 has formulas without cached values; readOptions say FAIL.
    "excelize_Book1.xlsx": "MISSING_FORMULA_VALUES",
    # A chartsheet is not a worksheet.
    "sheetjs_BlankSheetTypes.xlsm": "WORKSHEET_NOT_FOUND",
}
CONCURRENCY = 8


def configuration_path(name: str) -> Path:
    return EXAMPLE_CONFIGURATIONS.get(name, CONFIGURATIONS / f"{name}.json")


def configured_files() -> list[str]:
    names = {p.name.removesuffix(".json") for p in CONFIGURATIONS.glob("*.json")}
    return sorted(names | set(EXAMPLE_CONFIGURATIONS))


Results = dict[tuple[str, str], Outcome]


@pytest.fixture(scope="module")
def corpus_files() -> dict[str, Path]:
    files = {p.name: p for p in sorted((corpus_dir() / "files").iterdir())}
    assert files, f"no files in {corpus_dir() / 'files'}"
    return files


@pytest.fixture(scope="module")
def offline_pending(
    corpus_files: dict[str, Path],
) -> Iterator[dict[str, concurrent.futures.Future[Outcome]]]:
    """The offline CLI on every file, started in the background so it runs
    while the platform starts."""
    out = Path(tempfile.mkdtemp(prefix="mutate-e2e-offline-"))
    names = [n for n in configured_files() if n in corpus_files]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            name: pool.submit(
                convert_offline,
                corpus_files[name],
                configuration_path(name),
                out / f"{name}.out",
            )
            for name in names
        }
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def offline(
    offline_pending: dict[str, concurrent.futures.Future[Outcome]],
    platform: PlatformHarness,
) -> dict[str, Outcome]:
    """The offline CLI's outcome per file (asking for the platform first, so
    that it starts while the conversions run)."""
    return {name: future.result() for name, future in offline_pending.items()}


@pytest.fixture(scope="module")
def platform(offline_pending: object) -> Iterator[PlatformHarness]:
    home = Path(tempfile.mkdtemp(prefix="mutate-e2e-corpus-"))
    harness = start_platform(home, workers=1)
    try:
        yield harness
    finally:
        harness.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def platform_results(
    platform: PlatformHarness, corpus_files: dict[str, Path]
) -> Results:
    """Every configured corpus file through the platform, SYNC and ASYNC,
    submitted concurrently; the outcome per (file, mode)."""
    _, api_key, _ = platform.create_tenant("e2e-corpus")
    names = [n for n in configured_files() if n in corpus_files]
    return asyncio.run(_run_all(platform.gateway_address, api_key, names, corpus_files))


async def _run_all(
    address: str, api_key: str, names: list[str], files: dict[str, Path]
) -> Results:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with grpc.aio.insecure_channel(address) as channel:
        api = Api(channel, api_key)
        try:

            async def one(name: str) -> dict[tuple[str, str], Outcome]:
                configuration = load_configuration(configuration_path(name))
                data = files[name].read_bytes()
                async with limit:
                    config_id = await api.create_configuration(configuration)
                    jobs = {
                        mode: await api.submit(config_id, data, name, mode=value)
                        for mode, value in MODES.items()
                    }
                    return {
                        (name, mode): await api.outcome(await api.wait(job))
                        for mode, job in jobs.items()
                    }

            results: Results = {}
            for part in await asyncio.gather(*(one(name) for name in names)):
                results.update(part)
            return results
        finally:
            await api.close()


def test_every_corpus_file_has_a_configuration(corpus_files: dict[str, Path]) -> None:
    configured = set(configured_files())
    assert set(corpus_files) - configured == set(), "corpus files without one"
    assert configured - set(corpus_files) == set(), "configurations without a file"


def test_expected_failures_fail_offline(offline: dict[str, Outcome]) -> None:
    failed = {name: o.error_code for name, o in offline.items() if not o.ok}
    assert failed == EXPECTED_FAILURES


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", configured_files())
def test_platform_output_equals_offline_cli(
    name: str,
    mode: str,
    offline: dict[str, Outcome],
    platform_results: Results,
) -> None:
    expected = offline[name]
    got = platform_results[(name, mode)]
    if not expected.ok:
        assert not got.ok, f"{name} ({mode}) converted on the platform"
        assert got.error_code == expected.error_code, got.detail
        return
    assert got.ok, f"{name} ({mode}) failed: {got.error_code}: {got.detail}"
    assert got.data == expected.data, (
        f"{name} ({mode}): {len(got.data)} bytes from the platform, "
        f"{len(expected.data)} offline"
    )
