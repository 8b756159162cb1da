"""The engine pool: conversions in child processes, stop, time limit, crash."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from mutate.transformer.engine import Limits
from mutate.transformer.pool import (
    ConvertTask,
    EngineCrashed,
    EngineFailure,
    EnginePool,
    EngineTimeout,
    PoolState,
)
from mutate.v1 import configuration_pb2

from ._stubborn import sleep_ignoring_stop
from .helpers import CORRUPT_XLSX, CSV_SMALL, csv_configuration


def _task(tmp_path: Path, data: bytes = CSV_SMALL, **kw: object) -> ConvertTask:
    configuration = kw.pop("configuration", csv_configuration())
    assert isinstance(configuration, configuration_pb2.Configuration)
    return ConvertTask(
        configuration=configuration.SerializeToString(),
        data=data,
        file_name=str(kw.pop("file_name", "data.csv")),
        output_path=str(tmp_path / "out"),
    )


async def _pool(test_delay: float = 0.0) -> EnginePool:
    pool = EnginePool(
        processes=1, limits=Limits(), kill_grace=0.3, test_delay=test_delay
    )
    await pool.start()
    return pool


@pytest_asyncio.fixture
async def pool() -> AsyncIterator[EnginePool]:
    engine = await _pool()
    yield engine
    await engine.close()


@pytest_asyncio.fixture
async def slow_pool() -> AsyncIterator[EnginePool]:
    engine = await _pool(test_delay=2.0)
    yield engine
    await engine.close()


async def test_pool_converts_in_a_child_process(
    pool: EnginePool, tmp_path: Path
) -> None:
    seen: list[int] = []
    outcome = await pool.convert(
        _task(tmp_path), token=pool.new_token(), timeout=10, on_progress=seen.append
    )

    assert outcome.error is None
    assert (outcome.rows, outcome.columns) == (3, 2)
    assert outcome.file_extension == ".csv"
    assert outcome.engine_seconds > 0
    assert (tmp_path / "out").read_bytes() == CSV_SMALL
    await asyncio.sleep(0.05)  # progress arrives on its own pipe
    assert seen and seen[-1] == 100


async def test_pool_returns_engine_errors_as_job_errors(
    pool: EnginePool, tmp_path: Path
) -> None:
    configuration = csv_configuration()
    configuration.conversion_type = configuration_pb2.XLSX_TO_CSV

    outcome = await pool.convert(
        _task(tmp_path, CORRUPT_XLSX, configuration=configuration, file_name="b.xlsx"),
        token=pool.new_token(),
        timeout=10,
    )

    error = outcome.job_error()
    assert error is not None
    assert error.code
    assert "b.xlsx" in error.message


async def test_pool_reports_unexpected_failures(
    pool: EnginePool, tmp_path: Path
) -> None:
    task = _task(tmp_path)
    broken = ConvertTask(
        configuration=b"\xff\xff not a configuration",
        data=task.data,
        file_name=task.file_name,
        output_path=task.output_path,
    )
    with pytest.raises(EngineFailure, match="DecodeError"):
        await pool.convert(broken, token=pool.new_token(), timeout=10)


async def test_pool_stops_a_task_on_request(
    slow_pool: EnginePool, tmp_path: Path
) -> None:
    token = slow_pool.new_token()
    running = asyncio.create_task(
        slow_pool.convert(_task(tmp_path), token=token, timeout=10)
    )
    await asyncio.sleep(0.3)
    clock = time.monotonic()
    slow_pool.cancel(token)

    outcome = await running

    assert outcome.cancelled
    assert time.monotonic() - clock < 1.0


async def test_pool_stops_a_task_past_its_time_limit(
    slow_pool: EnginePool, tmp_path: Path
) -> None:
    clock = time.monotonic()
    with pytest.raises(EngineTimeout):
        await slow_pool.convert(
            _task(tmp_path), token=slow_pool.new_token(), timeout=0.3
        )
    assert time.monotonic() - clock < 1.5
    assert slow_pool.generation == 0  # it stopped by itself: nothing killed


async def test_pool_kills_a_task_that_ignores_the_time_limit(
    pool: EnginePool, tmp_path: Path
) -> None:
    clock = time.monotonic()
    with pytest.raises(EngineTimeout):
        await pool._run(sleep_ignoring_stop, 30.0, token=pool.new_token(), timeout=0.3)
    assert time.monotonic() - clock < 3.0
    assert pool.generation == 1
    outcome = await pool.convert(_task(tmp_path), token=pool.new_token(), timeout=10)
    assert outcome.rows == 3


async def test_pool_survives_a_crashed_child(
    slow_pool: EnginePool, tmp_path: Path
) -> None:
    running = asyncio.create_task(
        slow_pool.convert(_task(tmp_path), token=slow_pool.new_token(), timeout=10)
    )
    await asyncio.sleep(0.3)
    executor = slow_pool._executor
    assert executor is not None
    for pid in list(executor._processes):  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)

    with pytest.raises(EngineCrashed):
        await running

    assert slow_pool.generation == 1
    slow_pool.cancel("nothing")  # harmless for unknown tokens
    outcome = await slow_pool.convert(
        _task(tmp_path), token=slow_pool.new_token(), timeout=10
    )
    assert outcome.rows == 3


async def test_pool_validates_and_previews(pool: EnginePool) -> None:
    bad = csv_configuration()
    bad.read_options.csv_delimiter = ";;"

    assert await pool.validate(csv_configuration(), timeout=10) == []
    problems = await pool.validate(bad, timeout=10)
    preview = await pool.preview(
        csv_configuration(), CSV_SMALL, "data.csv", max_rows=1, timeout=10
    )

    assert [p.field for p in problems] == ["readOptions.csvDelimiter"]
    assert len(preview.after.rows) == 1


async def test_closed_pool_refuses_work(tmp_path: Path) -> None:
    engine = await _pool()
    await engine.close()

    assert engine.state is PoolState.CLOSED
    with pytest.raises(EngineCrashed):
        await engine.convert(_task(tmp_path), token="t", timeout=1)
