"""The engine's process pool: conversions run here, never on the event loop.

`EnginePool` owns a `ProcessPoolExecutor` (spawn context: the children start
clean, never inherit the event loop, and ignore SIGTERM and SIGINT so that a
signal sent to the whole process group leaves the parent to decide) and the
channels to its children:

- Progress and the pid of the process running a task come back on one pipe,
  read by the event loop itself (`add_reader`); each message is one small
  write, which the kernel keeps whole, so the children need no lock.
- A stop request is a file named after the task in a control folder; the
  engine's `should_cancel` is a `stat` of it, cheap enough to ask between
  rules and rows.

A child that dies breaks a `ProcessPoolExecutor` for good: the pool is then
replaced and the tasks that were running raise `EngineCrashed` (a transient
fault; the queue redelivers them). A task past its time limit is asked to
stop, then its process is killed (`EngineTimeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import enum
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from mutate.transformer import tracing
from mutate.v1 import configuration_pb2, job_pb2, transformer_pb2

logger = logging.getLogger(__name__)

T = TypeVar("T")

ProgressCallback = Callable[[int], None]


class PoolError(Exception):
    """Base of the faults of the pool itself (not of the file converted)."""


class EngineCrashed(PoolError):
    """The process running a task died (killed, out of memory, …)."""


class EngineTimeout(PoolError):
    """A task ran past its time limit and was stopped."""


class EngineFailure(PoolError):
    """The engine raised something other than `EngineError`: a bug."""


class PoolState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


@dataclasses.dataclass(frozen=True)
class ConvertTask:
    """One conversion, as sent to a child (everything picklable)."""

    configuration: bytes
    data: bytes
    file_name: str
    output_path: str


@dataclasses.dataclass(frozen=True)
class ConvertOutcome:
    """What a child sends back; `error` is a serialized `JobError`."""

    rows: int = 0
    columns: int = 0
    execution_log: tuple[bytes, ...] = ()
    warnings: tuple[str, ...] = ()
    content_type: str = ""
    file_extension: str = ""
    engine_seconds: float = 0.0
    error: bytes | None = None
    cancelled: bool = False

    def job_error(self) -> job_pb2.JobError | None:
        return job_pb2.JobError.FromString(self.error) if self.error else None

    def log_entries(self) -> list[configuration_pb2.ExecutionLogEntry]:
        return [
            configuration_pb2.ExecutionLogEntry.FromString(e)
            for e in self.execution_log
        ]


@dataclasses.dataclass(frozen=True)
class _Unexpected:
    """An exception a child caught so it never has to be unpickled here."""

    kind: str
    message: str
    trace: str


@dataclasses.dataclass
class _Running:
    on_progress: ProgressCallback | None
    pid: int = 0


class EnginePool:
    """A process pool running the conversion engine, replaced when it breaks."""

    def __init__(
        self,
        *,
        processes: int,
        limits: Any,
        kill_grace: float,
        nice: int = 0,
        test_delay: float = 0.0,
    ) -> None:
        self._processes = processes
        self._nice = nice
        self._limits = limits
        self._kill_grace = kill_grace
        self._test_delay = test_delay
        self._context = multiprocessing.get_context("spawn")
        self._control_dir = Path(tempfile.mkdtemp(prefix="mutate-engine-"))
        self._executor: ProcessPoolExecutor | None = None
        self._reader: multiprocessing.connection.Connection | None = None
        self._writer: multiprocessing.connection.Connection | None = None
        self._generation = 0
        self._running: dict[str, _Running] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.state = PoolState.NEW

    @property
    def generation(self) -> int:
        """Bumped each time a broken pool is replaced (for tests and metrics)."""
        return self._generation

    async def start(self) -> None:
        """Start the children and wait until each has imported the engine."""
        self._loop = asyncio.get_running_loop()
        self._new_executor()
        self.state = PoolState.RUNNING
        started = time.monotonic()
        await self._warm_up()
        logger.info(
            "engine pool ready",
            extra={
                "processes": self._processes,
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    async def close(self) -> None:
        """Stop every child at once; running tasks are abandoned."""
        if self.state is PoolState.CLOSED:
            return
        self.state = PoolState.CLOSED
        for token in list(self._running):
            self.cancel(token)
        self._drop_executor(kill=True)
        shutil.rmtree(self._control_dir, ignore_errors=True)

    def new_token(self) -> str:
        """A task name, for `cancel` and the control file."""
        return uuid.uuid4().hex

    def cancel(self, token: str) -> None:
        """Ask the task `token` to stop at its next check (idempotent)."""
        with contextlib.suppress(OSError):
            (self._control_dir / token).touch()

    async def convert(
        self,
        task: ConvertTask,
        *,
        token: str,
        timeout: float,
        on_progress: ProgressCallback | None = None,
    ) -> ConvertOutcome:
        """Run one conversion; raise a `PoolError` when the pool failed it.

        Traced: an `engine convert` span with one child span per rule.
        """
        with tracing.engine_span(task.file_name) as span:
            outcome = await self._run(
                _convert_in_child,
                task,
                token=token,
                timeout=timeout,
                on_progress=on_progress,
            )
            assert isinstance(outcome, ConvertOutcome)
            tracing.record_outcome(
                span,
                entries=outcome.log_entries() if span.is_recording() else (),
                engine_seconds=outcome.engine_seconds,
                rows=outcome.rows,
                error=outcome.job_error(),
            )
        return outcome

    async def validate(
        self, configuration: configuration_pb2.Configuration, *, timeout: float
    ) -> list[configuration_pb2.ConfigurationProblem]:
        """The problems of a configuration; empty when it is valid."""
        found: list[bytes] = await self._run(
            _validate_in_child,
            configuration.SerializeToString(),
            token=self.new_token(),
            timeout=timeout,
        )
        return [configuration_pb2.ConfigurationProblem.FromString(p) for p in found]

    async def preview(
        self,
        configuration: configuration_pb2.Configuration,
        data: bytes,
        file_name: str,
        *,
        max_rows: int,
        timeout: float,
    ) -> transformer_pb2.PreviewResponse:
        """First rows before and after the rules, as the engine shows them."""
        raw: bytes = await self._run(
            _preview_in_child,
            (configuration.SerializeToString(), data, file_name, max_rows),
            token=self.new_token(),
            timeout=timeout,
        )
        return transformer_pb2.PreviewResponse.FromString(raw)

    async def _run(
        self,
        function: Callable[[Any, str], T | _Unexpected],
        argument: Any,
        *,
        token: str,
        timeout: float,
        on_progress: ProgressCallback | None = None,
    ) -> T:
        if self.state is not PoolState.RUNNING or self._executor is None:
            raise EngineCrashed("the engine pool is not running")
        loop = asyncio.get_running_loop()
        generation = self._generation
        running = self._running[token] = _Running(on_progress)
        control = self._control_dir / token
        try:
            future = loop.run_in_executor(self._executor, function, argument, token)
            # The stop file stays until the child is done with the task, also
            # when the caller stopped waiting (deadline, shutdown).
            future.add_done_callback(lambda _: control.unlink(missing_ok=True))
            result = await self._wait(future, token, running, timeout, generation)
        except BrokenProcessPool as exc:
            self._replace(generation)
            raise EngineCrashed(
                "the engine process died while converting (killed or out of "
                "memory); the pool was restarted"
            ) from exc
        finally:
            self._running.pop(token, None)
        if isinstance(result, _Unexpected):
            logger.error(
                "engine raised unexpectedly: %s: %s\n%s",
                result.kind,
                result.message,
                result.trace,
            )
            raise EngineFailure(f"{result.kind}: {result.message}")
        return result

    async def _wait(
        self,
        future: asyncio.Future[T],
        token: str,
        running: _Running,
        timeout: float,
        generation: int,
    ) -> T:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            # The caller gave up (deadline, shutdown): stop the child too,
            # else it keeps a process busy for nothing.
            self.cancel(token)
            raise
        self.cancel(token)
        try:
            await asyncio.wait_for(asyncio.shield(future), self._kill_grace)
        except TimeoutError:
            self._kill(running.pid, generation)
            # The executor notices its dead child and fails the future.
            with contextlib.suppress(BrokenProcessPool, TimeoutError):
                await asyncio.wait_for(future, max(self._kill_grace, 1.0))
            self._replace(generation)
        raise EngineTimeout(f"the conversion ran longer than {timeout:.1f}s")

    def _kill(self, pid: int, generation: int) -> None:
        logger.warning("killing engine process past its time limit", extra={"pid": pid})
        if pid <= 0:
            # It never said which process it runs in: restart them all.
            self._replace(generation)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    async def _warm_up(self) -> None:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        # Tasks that linger a moment make the executor start every process.
        await asyncio.gather(
            *(
                loop.run_in_executor(self._executor, _ping, 0.05)
                for _ in range(self._processes)
            )
        )

    def _new_executor(self) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        self._reader, self._writer = reader, writer
        self._executor = ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=self._context,
            initializer=_init_child,
            initargs=(
                writer,
                str(self._control_dir),
                self._limits,
                self._nice,
                self._test_delay,
            ),
        )
        assert self._loop is not None
        self._loop.add_reader(reader.fileno(), self._on_readable, reader)

    def _drop_executor(self, *, kill: bool) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            if kill:
                # Private but stable since 3.8: the only way to stop children
                # that run a task (shutdown waits for them).
                processes = dict(getattr(executor, "_processes", None) or {})
                for process in processes.values():
                    with contextlib.suppress(Exception):
                        process.kill()
            executor.shutdown(wait=False, cancel_futures=True)
        if self._reader is not None and self._loop is not None:
            self._loop.remove_reader(self._reader.fileno())
        for conn in (self._reader, self._writer):
            if conn is not None:
                conn.close()
        self._reader = self._writer = None

    def _replace(self, generation: int) -> None:
        """Swap a broken executor for a new one (once per breakage)."""
        if generation != self._generation or self.state is not PoolState.RUNNING:
            return
        logger.warning("engine pool broken; starting a new one")
        self._drop_executor(kill=True)
        self._generation += 1
        self._new_executor()

    def _on_readable(self, reader: multiprocessing.connection.Connection) -> None:
        try:
            while reader.poll():
                kind, token, value = reader.recv()
                self._on_message(kind, token, value)
        except (EOFError, OSError):
            # Every writer is gone: the executor was dropped or broke.
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(reader.fileno())

    def _on_message(self, kind: str, token: str, value: int) -> None:
        running = self._running.get(token)
        if running is None:
            return
        if kind == "pid":
            running.pid = value
        elif kind == "progress" and running.on_progress is not None:
            running.on_progress(value)


# --- in the child processes ---------------------------------------------------

_PR_SET_PDEATHSIG = 1

_channel: multiprocessing.connection.Connection | None = None
_control_dir = Path()
_limits: Any = None
_test_delay = 0.0


def _init_child(
    channel: multiprocessing.connection.Connection,
    control_dir: str,
    limits: Any,
    nice: int,
    test_delay: float,
) -> None:
    global _channel, _control_dir, _limits, _test_delay
    # The parent decides when work stops: a SIGTERM or Ctrl-C sent to the
    # whole process group must not kill a conversion it wants to finish.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice > 0:
        # Lower priority only (never raises it, which would need privileges).
        with contextlib.suppress(OSError):
            os.nice(nice)
    _die_with_parent()
    _channel, _control_dir, _limits, _test_delay = (
        channel,
        Path(control_dir),
        limits,
        test_delay,
    )
    import mutate.transformer.engine  # noqa: F401  (import once, up front)


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so no orphan keeps converting."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:
            os._exit(1)


def _send(kind: str, token: str, value: int) -> None:
    if _channel is not None:
        with contextlib.suppress(OSError):
            _channel.send((kind, token, value))


def _ping(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _should_cancel_for(token: str) -> Callable[[], bool]:
    path = _control_dir / token
    return path.exists


def _idle_for_tests(
    seconds: float, should_cancel: Callable[[], bool], progress: ProgressCallback
) -> bool:
    """MUTATE_TEST_ENGINE_DELAY_MS: idle, reporting 0-50 %; False if cancelled."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if should_cancel():
            return False
        progress(int(50 * (1 - left / seconds)))
        time.sleep(min(left, 0.02))
    return True


def _convert_in_child(task: ConvertTask, token: str) -> ConvertOutcome | _Unexpected:
    from mutate.transformer import engine

    _send("pid", token, os.getpid())
    should_cancel = _should_cancel_for(token)
    last = -1

    def progress(percent: int) -> None:
        nonlocal last
        if percent != last:
            last = percent
            _send("progress", token, percent)

    started = time.perf_counter()
    try:
        if _test_delay and not _idle_for_tests(_test_delay, should_cancel, progress):
            return ConvertOutcome(cancelled=True)
        configuration = configuration_pb2.Configuration.FromString(task.configuration)
        with open(task.output_path, "wb") as output:
            result = engine.convert(
                task.data,
                task.file_name,
                configuration,
                output,
                limits=_limits,
                progress=progress,
                should_cancel=should_cancel,
            )
    except engine.EngineError as exc:
        if should_cancel():
            return ConvertOutcome(cancelled=True)
        return ConvertOutcome(
            error=exc.to_proto().SerializeToString(),
            execution_log=tuple(
                e.SerializeToString() for e in getattr(exc, "execution_log", ())
            ),
            engine_seconds=time.perf_counter() - started,
        )
    except Exception as exc:  # noqa: BLE001 - sent back whole, logged there
        return _unexpected(exc)
    return ConvertOutcome(
        rows=result.rows,
        columns=result.columns,
        execution_log=tuple(e.SerializeToString() for e in result.execution_log),
        warnings=tuple(result.warnings),
        content_type=result.content_type,
        file_extension=result.file_extension,
        engine_seconds=time.perf_counter() - started,
    )


def _validate_in_child(configuration: bytes, token: str) -> list[bytes] | _Unexpected:
    from mutate.transformer import engine

    try:
        problems = engine.validate_configuration(
            configuration_pb2.Configuration.FromString(configuration)
        )
    except Exception as exc:  # noqa: BLE001 - sent back whole, logged there
        return _unexpected(exc)
    return [p.SerializeToString() for p in problems]


def _preview_in_child(
    argument: tuple[bytes, bytes, str, int], token: str
) -> bytes | _Unexpected:
    from mutate.transformer import engine

    configuration, data, file_name, max_rows = argument
    _send("pid", token, os.getpid())
    try:
        response = engine.preview(
            data,
            file_name,
            configuration_pb2.Configuration.FromString(configuration),
            max_rows=max_rows,
            limits=_limits,
        )
    except engine.EngineError as exc:
        response = transformer_pb2.PreviewResponse(error=exc.to_proto())
    except Exception as exc:  # noqa: BLE001 - sent back whole, logged there
        return _unexpected(exc)
    return response.SerializeToString()


def _unexpected(exc: Exception) -> _Unexpected:
    return _Unexpected(
        kind=type(exc).__name__, message=str(exc), trace=traceback.format_exc()
    )


__all__ = [
    "ConvertOutcome",
    "ConvertTask",
    "EngineCrashed",
    "EngineFailure",
    "EnginePool",
    "EngineTimeout",
    "PoolError",
    "PoolState",
]
