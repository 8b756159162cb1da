"""Rows to protobuf messages and back: times, statuses, JSON columns."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from mutate.gateway.db import Row
from mutate.gateway.public_errors import public_job_error
from mutate.v1 import configuration_pb2, job_pb2, public_api_pb2

STATUS_NAMES: dict[int, str] = {
    job_pb2.Job.PENDING: "pending",
    job_pb2.Job.RUNNING: "running",
    job_pb2.Job.COMPLETED: "completed",
    job_pb2.Job.FAILED: "failed",
    job_pb2.Job.CANCELLED: "cancelled",
    job_pb2.Job.DEAD_LETTERED: "dead_lettered",
}
STATUS_VALUES = {name: value for value, name in STATUS_NAMES.items()}
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "dead_lettered"})
ACTIVE_STATUSES = ("pending", "running")
RETRYABLE_STATUSES = ("failed", "cancelled", "dead_lettered")

MODE_NAMES: dict[int, str] = {
    job_pb2.Job.AUTO: "auto",
    job_pb2.Job.SYNC: "sync",
    job_pb2.Job.ASYNC: "async",
}
MODE_VALUES = {name: value for value, name in MODE_NAMES.items()}


def timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def set_time(message: Message, field: str, value: dt.datetime | None) -> None:
    if value is not None:
        getattr(message, field).FromDatetime(value)


def to_json(message: Message) -> dict[str, Any]:
    """Proto3 JSON as a dict, for JSONB columns."""
    return json_format.MessageToDict(message)


def from_json(data: Any, message: Message) -> Message:
    if isinstance(data, str):
        data = json.loads(data)
    json_format.ParseDict(data, message, ignore_unknown_fields=True)
    return message


def list_to_json(messages: Iterable[Message]) -> str:
    return json.dumps([to_json(m) for m in messages])


def api_key(row: Row) -> public_api_pb2.ApiKey:
    key = public_api_pb2.ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=list(row["scopes"] or ()),
    )
    set_time(key, "create_time", row["created_at"])
    set_time(key, "last_used_time", row.get("last_used_at"))
    set_time(key, "revoke_time", row.get("revoked_at"))
    return key


def configuration(
    spec: Any,
    *,
    id: str,
    version: int,
    created_at: dt.datetime,
    updated_at: dt.datetime,
) -> configuration_pb2.Configuration:
    """A stored version (its proto3 JSON) with the output-only fields set."""
    message = configuration_pb2.Configuration()
    from_json(spec, message)
    message.id = id
    message.version = version
    set_time(message, "create_time", created_at)
    set_time(message, "update_time", updated_at)
    return message


def job(row: Row) -> job_pb2.Job:
    message = job_pb2.Job(
        id=row["id"],
        configuration_id=row["configuration_id"],
        configuration_version=row["configuration_version"],
        status=STATUS_VALUES[row["status"]],  # type: ignore[arg-type]
        mode=MODE_VALUES[row["mode"]],  # type: ignore[arg-type]
        progress_percent=row["progress_percent"],
        attempt=row["attempt"],
        input_file_name=row["input_file_name"],
        input_bytes=row["input_bytes"],
        output_file_name=row["output_file_name"],
        output_bytes=row["output_bytes"],
        output_rows=row["output_rows"],
        output_columns=row["output_columns"],
        output_content_type=row["output_content_type"],
        warnings=list(row["warnings"] or ()),
        webhook_url=row["webhook_url"],
        client_reference=row["client_reference"],
    )
    for entry in row["execution_log"] or ():
        from_json(entry, message.execution_log.add())
    if row["error"]:
        from_json(row["error"], message.error)
        # Rows hold the worker's words, which may quote a storage key.
        public_job_error(message.error, row["organization_id"])
    set_time(message, "create_time", row["created_at"])
    set_time(message, "update_time", row["updated_at"])
    set_time(message, "start_time", row["started_at"])
    set_time(message, "finish_time", row["finished_at"])
    return message
