"""How the CLI prints: aligned tables for people, proto3 JSON for scripts.

Every function returns text; the caller decides where it goes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from google.protobuf import json_format, message, timestamp_pb2

from mutate.v1 import (
    configuration_pb2,
    job_pb2,
    public_api_pb2,
    transformer_pb2,
    webhook_pb2,
)

Job = job_pb2.Job
EMPTY = "-"


def to_json(msg: message.Message) -> str:
    """The proto3 JSON form (camelCase names), as the REST API prints it."""
    return json_format.MessageToJson(msg, indent=2, ensure_ascii=False)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns aligned on the widest cell; the last column is not padded."""
    text_rows = [[_cell(v) for v in row] for row in rows]
    for row in text_rows:
        row += [""] * (len(headers) - len(row))
    widths = [len(h) for h in headers]
    for row in text_rows:
        for index, value in enumerate(row):
            widths[index] = max(widths[index], len(value))
    lines = []
    for row in [list(headers), *text_rows]:
        padded = [v.ljust(w) for v, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def fields(pairs: Iterable[tuple[str, object]]) -> str:
    """`name:  value` lines, values aligned."""
    items = [(name, _cell(value)) for name, value in pairs]
    width = max((len(name) for name, _ in items), default=0) + 1
    return "\n".join(f"{(name + ':').ljust(width)}  {value}" for name, value in items)


def _cell(value: object) -> str:
    if value is None or value == "":
        return EMPTY
    return " ".join(str(value).split("\n"))


def timestamp(value: timestamp_pb2.Timestamp) -> str:
    if not value.seconds and not value.nanos:
        return EMPTY
    moment = value.ToDatetime(tzinfo=dt.UTC).replace(microsecond=0)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def size(count: int) -> str:
    """`1,234 B` under a KiB, else `12.3 KiB` / `4.5 MiB`."""
    if count < 1024:
        return f"{count:,} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def status_name(status: int) -> str:
    return Job.Status.Name(status).lower() if status else "unknown"  # type: ignore[arg-type]


def mode_name(mode: int) -> str:
    return Job.Mode.Name(mode).lower() if mode else "auto"  # type: ignore[arg-type]


def rule_type(rule: configuration_pb2.Rule) -> str:
    if rule.type:
        return configuration_pb2.RuleType.Name(rule.type)
    params = rule.WhichOneof("params")
    return params.upper() if params else EMPTY


# ------------------------------------------------------------ jobs


def job_error(error: job_pb2.JobError) -> str:
    text = f"{error.code}: {error.message}" if error.code else error.message
    if error.rule_id:
        text += f" (rule {error.rule_id})"
    return text


def job_rows(jobs: Iterable[job_pb2.Job]) -> str:
    return table(
        ("ID", "STATUS", "CONFIGURATION", "INPUT", "OUTPUT ROWS", "CREATED"),
        (
            (
                job.id,
                _status_cell(job),
                f"{job.configuration_id}@v{job.configuration_version}",
                job.input_file_name,
                job.output_rows if job.status == Job.COMPLETED else "",
                timestamp(job.create_time),
            )
            for job in jobs
        ),
    )


def _status_cell(job: job_pb2.Job) -> str:
    name = status_name(job.status)
    if job.status == Job.RUNNING and job.progress_percent:
        return f"{name} {job.progress_percent}%"
    return name


def _dimensions(rows: int, columns: int) -> str:
    """`3 rows × 8 columns`, `1 row × 1 column`."""
    return (
        f"{rows:,} row{'' if rows == 1 else 's'} × "
        f"{columns:,} column{'' if columns == 1 else 's'}"
    )


def job_detail(job: job_pb2.Job) -> str:
    output = EMPTY
    if job.output_file_name:
        output = (
            f"{job.output_file_name} ({size(job.output_bytes)}, "
            f"{_dimensions(job.output_rows, job.output_columns)})"
        )
    parts = [
        fields(
            [
                ("id", job.id),
                ("status", _status_cell(job)),
                (
                    "configuration",
                    f"{job.configuration_id} (version {job.configuration_version})",
                ),
                ("mode", mode_name(job.mode)),
                ("attempt", job.attempt),
                ("input", f"{job.input_file_name} ({size(job.input_bytes)})"),
                ("output", output),
                ("error", job_error(job.error) if job.HasField("error") else ""),
                ("webhook", job.webhook_url),
                ("reference", job.client_reference),
                ("created", timestamp(job.create_time)),
                ("started", timestamp(job.start_time)),
                ("finished", timestamp(job.finish_time)),
            ]
        )
    ]
    if job.warnings:
        parts.append("warnings:\n" + "\n".join(f"  {w}" for w in job.warnings))
    if job.execution_log:
        parts.append("execution log:\n" + execution_log(job.execution_log))
    return "\n\n".join(parts)


def execution_log(entries: Iterable[configuration_pb2.ExecutionLogEntry]) -> str:
    return table(
        ("RULE", "TYPE", "OUTCOME", "ROWS", "COLUMNS", "MS", "MESSAGE"),
        (
            (
                entry.rule_id,
                configuration_pb2.RuleType.Name(entry.rule_type),
                configuration_pb2.ExecutionLogEntry.Outcome.Name(entry.outcome).lower(),
                f"{entry.rows_before}→{entry.rows_after}",
                f"{entry.columns_before}→{entry.columns_after}",
                f"{entry.duration_ms:.1f}",
                entry.message,
            )
            for entry in entries
        ),
    )


# ------------------------------------------------------------ configurations


def configuration_rows(items: Iterable[configuration_pb2.Configuration]) -> str:
    return table(
        ("ID", "NAME", "VERSION", "TYPE", "RULES", "UPDATED"),
        (
            (
                c.id,
                c.name,
                c.version,
                configuration_pb2.ConversionType.Name(c.conversion_type),
                len(c.rules),
                timestamp(c.update_time),
            )
            for c in items
        ),
    )


def configuration_detail(c: configuration_pb2.Configuration) -> str:
    summary = fields(
        [
            ("id", c.id),
            ("name", c.name),
            ("description", c.description),
            ("version", c.version),
            ("conversion", configuration_pb2.ConversionType.Name(c.conversion_type)),
            ("webhook", c.webhook_url),
            ("created", timestamp(c.create_time)),
            ("updated", timestamp(c.update_time)),
        ]
    )
    rules = table(
        ("#", "ID", "TYPE", "DESCRIPTION"),
        (
            (index, rule.id, rule_type(rule), rule.description)
            for index, rule in enumerate(c.rules, start=1)
        ),
    )
    return f"{summary}\n\nrules:\n{rules}"


def preview(response: transformer_pb2.PreviewResponse) -> str:
    """A configuration test: the sample before and after, and the log."""
    parts = [
        _table_preview("before", response.before),
        _table_preview("after", response.after),
    ]
    if response.execution_log:
        parts.append("execution log:\n" + execution_log(response.execution_log))
    if response.warnings:
        parts.append("warnings:\n" + "\n".join(f"  {w}" for w in response.warnings))
    if response.HasField("error"):
        parts.append("error: " + job_error(response.error))
    return "\n\n".join(parts)


def _table_preview(title: str, preview: transformer_pb2.TablePreview) -> str:
    where = f" (sheet {preview.worksheet!r})" if preview.worksheet else ""
    heading = (
        f"{title}{where}: {_dimensions(preview.total_rows, preview.total_columns)}"
    )
    if len(preview.rows) < preview.total_rows:
        heading += f", first {len(preview.rows)} shown"
    width = max([len(preview.header), *(len(r.cells) for r in preview.rows)])
    header = list(preview.header) + [""] * (width - len(preview.header))
    body = table(
        ("ROW", *(h or EMPTY for h in header)),
        ((row.row_number, *row.cells) for row in preview.rows),
    )
    return f"{heading}\n{body}"


# ------------------------------------------------------------ webhooks, queue


def delivery_rows(deliveries: Iterable[webhook_pb2.Delivery]) -> str:
    return table(
        ("ID", "EVENT", "STATUS", "TRIES", "LAST CODE", "LAST TRY", "URL", "ERROR"),
        (
            (
                d.id,
                d.event_type,
                webhook_pb2.Delivery.Status.Name(d.status).lower(),
                d.try_count,
                d.last_status_code or "",
                timestamp(d.last_try_time),
                d.url,
                d.last_error,
            )
            for d in deliveries
        ),
    )


def queue_stats(stats: public_api_pb2.QueueStats) -> str:
    oldest = stats.oldest_waiting_age.ToTimedelta().total_seconds()
    pairs: list[tuple[str, object]] = [
        (
            "scope",
            "all organizations" if stats.all_organizations else "your organization",
        ),
        ("waiting", stats.messages_waiting),
        ("in flight", stats.messages_in_flight),
        ("redelivered", stats.messages_redelivered),
        ("dead-lettered", stats.dead_lettered),
        ("oldest waiting", f"{oldest:.1f}s" if oldest else ""),
    ]
    pairs += [
        (f"jobs {name}", count) for name, count in sorted(stats.jobs_by_status.items())
    ]
    if stats.HasField("webhooks"):
        hooks = stats.webhooks
        pairs += [
            ("webhooks pending", hooks.pending),
            ("webhooks dead-lettered", hooks.dead_lettered),
            ("webhooks delivered 1h", hooks.delivered_last_hour),
            ("oldest pending webhook", timestamp(hooks.oldest_pending_time)),
        ]
    return fields(pairs)


def api_key_rows(keys: Iterable[public_api_pb2.ApiKey]) -> str:
    return table(
        ("ID", "NAME", "PREFIX", "SCOPES", "CREATED", "LAST USED", "REVOKED"),
        (
            (
                k.id,
                k.name,
                k.prefix,
                ",".join(k.scopes),
                timestamp(k.create_time),
                timestamp(k.last_used_time),
                timestamp(k.revoke_time),
            )
            for k in keys
        ),
    )
