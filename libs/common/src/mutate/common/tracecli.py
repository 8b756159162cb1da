"""`mutate-trace`: print a job's trace from a local trace file as a span tree.

    python -m mutate.common.tracecli show JOB_ID [--file spans.jsonl]
    python -m mutate.common.tracecli list [--file spans.jsonl]
    python -m mutate.common.tracecli receive --port 4318 --file spans.jsonl

The file is what services write with `MUTATE_TRACE_FILE` (or what `receive`,
an OTLP/HTTP receiver on 127.0.0.1, writes for services exporting OTLP):
OTLP/JSON lines. A job's traces are the ones with a span carrying its
`mutate.job_id` attribute; a retried job may have several.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TextIO

from mutate.common.telemetry import JOB_ID_ATTRIBUTE
from mutate.common.telemetry.otlpjson import SpanRecord, read_spans

FILE_ENV = "MUTATE_TRACE_FILE"


def traces_of_job(spans: Iterable[SpanRecord], job_id: str) -> list[str]:
    """Trace ids with a span of `job_id`, oldest first."""
    first: dict[str, int] = {}
    for span in spans:
        if span.attributes.get(JOB_ID_ATTRIBUTE) == job_id:
            start = first.get(span.trace_id, span.start_ns)
            first[span.trace_id] = min(start, span.start_ns)
    return sorted(first, key=first.__getitem__)


def render_trace(spans: Sequence[SpanRecord], *, attributes: bool = False) -> str:
    """A span tree with start offsets, durations, services and error marks."""
    if not spans:
        return "(no spans)\n"
    ids = {span.span_id for span in spans}
    children: dict[str, list[SpanRecord]] = defaultdict(list)
    roots = []
    for span in spans:
        if span.parent_span_id and span.parent_span_id in ids:
            children[span.parent_span_id].append(span)
        else:
            roots.append(span)
    for group in (roots, *children.values()):
        group.sort(key=lambda s: (s.start_ns, s.end_ns))

    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    services = sorted({s.service for s in spans if s.service})
    errors = sum(1 for s in spans if s.is_error)
    lines = [
        f"trace {spans[0].trace_id}  {len(spans)} spans  "
        f"{_ms((end - start) / 1e9)}  services: {', '.join(services)}"
        + (f"  errors: {errors}" if errors else ""),
        f"{'start':>10} {'duration':>10}  {'service':<20} span",
    ]

    def walk(span: SpanRecord, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        label = f"{span.name} [{span.kind}]"
        if top and span.parent_span_id:
            label += f" (parent {span.parent_span_id} not in file)"
        if span.is_error:
            label += f"  ✗ ERROR {span.status_message}".rstrip()
        lines.append(
            f"{'+' + _ms((span.start_ns - start) / 1e9):>10} "
            f"{_ms(span.duration):>10}  {span.service:<20} {prefix}{branch}{label}"
        )
        inner = prefix if top else prefix + ("   " if last else "│  ")
        if attributes:
            for key, value in sorted(span.attributes.items()):
                lines.append(f"{'':>10} {'':>10}  {'':<20} {inner}   · {key}={value}")
        kids = children.get(span.span_id, [])
        for index, child in enumerate(kids):
            walk(child, inner, index == len(kids) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    return "\n".join(lines) + "\n"


def _ms(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.2f}s"
    return f"{seconds * 1000:.1f}ms"


def _by_trace(spans: Iterable[SpanRecord]) -> dict[str, list[SpanRecord]]:
    out: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        out[span.trace_id].append(span)
    return out


def show(
    job_id: str, path: str, *, trace_id: str = "", attributes: bool, out: TextIO
) -> int:
    spans = read_spans(path)
    traces = _by_trace(spans)
    wanted = [trace_id] if trace_id else traces_of_job(spans, job_id)
    wanted = [t for t in wanted if t in traces]
    if not wanted:
        what = f"trace {trace_id}" if trace_id else f"job {job_id}"
        print(f"no spans of {what} in {path}", file=sys.stderr)
        return 1
    for index, trace_id_ in enumerate(wanted):
        if index:
            out.write("\n")
        out.write(render_trace(traces[trace_id_], attributes=attributes))
    return 0


def list_traces(path: str, *, out: TextIO) -> int:
    """One line a trace: start time, duration, job, root span, services."""
    for trace_id, spans in sorted(
        _by_trace(read_spans(path)).items(),
        key=lambda item: min(s.start_ns for s in item[1]),
    ):
        start = min(s.start_ns for s in spans)
        end = max(s.end_ns for s in spans)
        jobs = {str(s.attributes.get(JOB_ID_ATTRIBUTE, "")) for s in spans} - {""}
        root = min(spans, key=lambda s: (bool(s.parent_span_id), s.start_ns))
        error = "  ✗" if any(s.is_error for s in spans) else ""
        out.write(
            f"{time.strftime('%H:%M:%S', time.localtime(start / 1e9))} "
            f"{trace_id} {_ms((end - start) / 1e9):>9} "
            f"job={','.join(sorted(jobs)) or '-'} {root.name} "
            f"[{', '.join(sorted({s.service for s in spans}))}]{error}\n"
        )
    return 0


def receive(host: str, port: int, path: str, *, out: TextIO) -> int:
    from mutate.common.telemetry.receiver import OtlpReceiver

    with OtlpReceiver(host=host, port=port, path=path) as receiver:
        out.write(
            f"OTLP/HTTP receiver on {receiver.endpoint}, writing {path}; "
            f"set OTEL_EXPORTER_OTLP_ENDPOINT={receiver.endpoint}\n"
        )
        out.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="mutate-trace", description="Show Mutate traces from a local file."
    )
    default_file = os.environ.get(FILE_ENV, "")
    commands = parser.add_subparsers(dest="command", required=True)

    show_cmd = commands.add_parser("show", help="print the span tree of a job")
    show_cmd.add_argument("job_id", nargs="?", default="")
    show_cmd.add_argument("--trace-id", default="", help="a trace id instead")
    show_cmd.add_argument("--attributes", action="store_true", help="show attributes")

    list_cmd = commands.add_parser("list", help="one line per trace in the file")

    receive_cmd = commands.add_parser("receive", help="run an OTLP/HTTP receiver")
    receive_cmd.add_argument("--host", default="127.0.0.1")
    receive_cmd.add_argument("--port", type=int, default=4318)

    for command in (show_cmd, list_cmd, receive_cmd):
        command.add_argument(
            "--file",
            default=default_file,
            required=not default_file,
            help=f"trace file (default ${FILE_ENV})",
        )

    args = parser.parse_args(argv)
    if args.command == "receive":
        return receive(args.host, args.port, args.file, out=out)
    if not os.path.exists(args.file):
        print(f"no trace file at {args.file}", file=sys.stderr)
        return 1
    if args.command == "list":
        return list_traces(args.file, out=out)
    if not args.job_id and not args.trace_id:
        parser.error("show needs a JOB_ID or --trace-id")
    return show(
        args.job_id,
        args.file,
        trace_id=args.trace_id,
        attributes=args.attributes,
        out=out,
    )


if __name__ == "__main__":
    sys.exit(main())
