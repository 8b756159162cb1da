"""A small OTLP/HTTP receiver on 127.0.0.1, for tests and the local view.

It accepts `POST /v1/traces` (protobuf, optionally gzip), keeps the spans
in memory as `SpanRecord`s and, given a path, appends each request to a
trace file as an OTLP/JSON line (what `mutate-trace show` reads). Metrics
and logs requests are accepted and counted, not decoded.

    with OtlpReceiver() as receiver:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        ...
        spans = receiver.wait_for(lambda spans: len(spans) >= 3, timeout=10)
"""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from mutate.common.telemetry.otlpjson import (
    SpanRecord,
    records_from_json,
    trace_request_to_json,
)

logger = logging.getLogger(__name__)

_PROTOBUF = "application/x-protobuf"


class OtlpReceiver:
    """OTLP/HTTP on a free loopback port, in a background thread."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, path: str | Path | None = None
    ) -> None:
        self._spans: list[SpanRecord] = []
        self._changed = threading.Condition()
        self._path = Path(path) if path else None
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.requests = 0
        self._server = http.server.ThreadingHTTPServer(
            (host, port), _handler_class(self)
        )
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The base URL, for OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def spans(self) -> list[SpanRecord]:
        with self._changed:
            return list(self._spans)

    def clear(self) -> None:
        with self._changed:
            self._spans.clear()

    def wait_for(
        self,
        predicate: Callable[[Sequence[SpanRecord]], bool],
        *,
        timeout: float,
    ) -> list[SpanRecord]:
        """The spans once `predicate(spans)` holds; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self._spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"OTLP receiver: condition not met in {timeout} s "
                        f"({len(self._spans)} spans received)"
                    )
                self._changed.wait(left)
            return list(self._spans)

    def _add_traces(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        data = trace_request_to_json(request)
        records = records_from_json(data)
        if self._path is not None:
            with open(self._path, "a", encoding="utf-8") as out:
                out.write(json.dumps(data, separators=(",", ":")) + "\n")
        with self._changed:
            self._spans.extend(records)
            self.requests += 1
            self._changed.notify_all()

    def _add_metrics(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest
    ) -> None:
        with self._changed:
            self.metric_requests.append(request)
            self.requests += 1
            self._changed.notify_all()


def _handler_class(receiver: OtlpReceiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = _decompress(body, self.headers.get("Content-Encoding", ""))
            except (OSError, zlib.error):
                self._reply(400, b"bad content encoding")
                return
            if self.headers.get_content_type() != _PROTOBUF:
                self._reply(415, b"only application/x-protobuf is supported")
                return
            response: Message
            if self.path == "/v1/traces":
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                receiver._add_traces(request)
                response = trace_service_pb2.ExportTraceServiceResponse()
            elif self.path == "/v1/metrics":
                metrics = metrics_service_pb2.ExportMetricsServiceRequest.FromString(
                    body
                )
                receiver._add_metrics(metrics)
                response = metrics_service_pb2.ExportMetricsServiceResponse()
            elif self.path == "/v1/logs":
                self._reply(200, b"", content_type=_PROTOBUF)
                return
            else:
                self._reply(404, b"not found")
                return
            self._reply(200, response.SerializeToString(), content_type=_PROTOBUF)

        def _reply(
            self, code: int, body: bytes, *, content_type: str = "text/plain"
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            logger.debug("otlp receiver: " + format, *args)  # noqa: G003

    return Handler


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body
