"""Why a job delivery did not complete, and what the queue should do about it.

The worker's error tree::

    JobFault                  carries a JobError (code, message, rule)
    ├── TransientFault        nak with a growing delay; dead-letter past the limit
    └── PermanentFault        publish `failed`, terminate the message at once
    JobCancelled              publish `cancelled` (the cancellation bucket said so)
    Interrupted               the worker is stopping: nak for another replica

`faults_of(stage)` is the one place where storage, NATS and engine-pool errors
become `JobFault`s. Codes the worker adds to the engine's own (`JobError.code`):
transient `STORAGE_UNAVAILABLE`, `STORAGE_DENIED`, `NATS_UNAVAILABLE`,
`ENGINE_CRASHED`, `ENGINE_STOPPED`, `LOCAL_IO`; permanent `INPUT_NOT_FOUND`,
`LIMIT_EXCEEDED`, `INVALID_REQUEST`, `INTERNAL`; on `dead_lettered` the last
transient code, or `WORKER_STOPPED` when the delivery before died unreported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import nats.errors

from mutate.common import errors, keys
from mutate.transformer.pool import EngineCrashed, EngineFailure, EngineTimeout
from mutate.v1 import configuration_pb2, job_pb2


class JobFault(Exception):
    """A delivery failed; `retryable` says whether the queue should try again."""

    retryable = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        rule_id: str = "",
        execution_log: Sequence[configuration_pb2.ExecutionLogEntry] = (),
        warnings: Sequence[str] = (),
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.rule_id = rule_id
        self.execution_log = list(execution_log)
        self.warnings = list(warnings)

    def to_proto(self) -> job_pb2.JobError:
        return job_pb2.JobError(
            code=self.code,
            message=self.message,
            rule_id=self.rule_id,
            retryable=self.retryable,
        )

    @classmethod
    def from_proto(
        cls,
        error: job_pb2.JobError,
        *,
        execution_log: Sequence[configuration_pb2.ExecutionLogEntry] = (),
        warnings: Sequence[str] = (),
    ) -> JobFault:
        """The fault for an engine error: transient only if it says so."""
        kind = TransientFault if error.retryable else PermanentFault
        return kind(
            error.code,
            error.message,
            rule_id=error.rule_id,
            execution_log=execution_log,
            warnings=warnings,
        )


class TransientFault(JobFault):
    """Storage or NATS unreachable, a timeout, a crashed engine process."""

    retryable = True


class PermanentFault(JobFault):
    """A bad file or configuration: running it again would fail the same way."""


class JobCancelled(Exception):
    """The attempt was cancelled through the cancellation bucket."""


class Interrupted(Exception):
    """The worker is shutting down and gave the job back to the queue."""


@contextlib.contextmanager
def faults_of(stage: str) -> Iterator[None]:
    """Turn what `stage` raises into a `JobFault` (the one translation point).

    `stage` is `input`, `engine`, `output` or `events`; it names the step in
    the message and decides what a missing object means.
    """
    try:
        yield
    except (JobFault, JobCancelled, Interrupted):
        raise
    except errors.MutateError as exc:
        raise _storage_fault(stage, exc) from exc
    except EngineCrashed as exc:
        raise TransientFault("ENGINE_CRASHED", str(exc)) from exc
    except EngineTimeout as exc:
        raise PermanentFault("LIMIT_EXCEEDED", str(exc)) from exc
    except EngineFailure as exc:
        raise PermanentFault(
            "INTERNAL", f"the conversion engine failed unexpectedly ({exc})"
        ) from exc
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransientFault(
            "NATS_UNAVAILABLE", f"NATS failed while {_doing(stage)}: {exc!r}"
        ) from exc
    except OSError as exc:
        raise TransientFault(
            "LOCAL_IO", f"local file error while {_doing(stage)}: {exc}"
        ) from exc


def _doing(stage: str) -> str:
    return {
        "input": "reading the input",
        "engine": "converting",
        "output": "storing the output",
        "events": "publishing an event",
    }.get(stage, stage)


def _storage_fault(stage: str, exc: errors.MutateError) -> JobFault:
    """The job's error for a storage failure. Its message reaches the job's
    owner (API, webhook), so the object key storage quoted is left out; the
    worker's log keeps the whole error."""
    what = _doing(stage)
    said = keys.without_storage_keys(exc.message)
    if isinstance(exc, errors.NotFound) and stage == "input":
        return PermanentFault("INPUT_NOT_FOUND", f"the input file is gone: {said}")
    if isinstance(exc, errors.FailedPrecondition):
        return PermanentFault("LIMIT_EXCEEDED", f"{what}: {said}")
    if isinstance(exc, errors.InvalidArgument):
        return PermanentFault("INVALID_REQUEST", f"{what}: {said}")
    if isinstance(exc, errors.PermissionDenied | errors.Unauthenticated):
        # A misconfigured deployment, not a bad file: an operator can fix it
        # and the job then goes through.
        return TransientFault("STORAGE_DENIED", f"{what}: {said}")
    return TransientFault("STORAGE_UNAVAILABLE", f"{what}: {said}")


__all__ = [
    "Interrupted",
    "JobCancelled",
    "JobFault",
    "PermanentFault",
    "TransientFault",
    "faults_of",
]
