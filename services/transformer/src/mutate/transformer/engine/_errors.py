"""The engine's one error type: a stable code plus a specific human message."""

from __future__ import annotations

from mutate.v1 import configuration_pb2, job_pb2

__all__ = ["EngineError"]


class EngineError(Exception):
    """A conversion failed for a reason worth telling the user.

    `code` is stable and machine-readable (``INVALID_FILE``, ``LIMIT_EXCEEDED``…);
    `message` names the cell, rule, sheet or limit involved.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        rule_id: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.rule_id = rule_id
        self.retryable = retryable
        #: Entries of the rules that ran before the failure (and the failed one).
        self.execution_log: list[configuration_pb2.ExecutionLogEntry] = []

    def __repr__(self) -> str:
        return f"EngineError(code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields must survive pickling across the process pool.
        return (_rebuild, (self.code, self.message, self.rule_id, self.retryable))

    def to_proto(self) -> job_pb2.JobError:
        """The wire form carried by job records and webhooks."""
        return job_pb2.JobError(
            code=self.code,
            message=self.message,
            rule_id=self.rule_id or "",
            retryable=self.retryable,
        )


def _rebuild(
    code: str, message: str, rule_id: str | None, retryable: bool
) -> EngineError:
    return EngineError(code, message, rule_id=rule_id, retryable=retryable)
