"""A tiny OTLP/HTTP collector on 127.0.0.1 that decodes the protobuf requests it gets."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_KINDS = {"/v1/traces": ExportTraceServiceRequest, "/v1/metrics": ExportMetricsServiceRequest}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Any

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = _KINDS[self.path]()
        request.ParseFromString(body)
        self.server.received.setdefault(self.path, []).append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, dict[str, list[Any]]]]:
    """Yield the base URL and a dict of decoded requests by path (``/v1/traces``, ...)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.received = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def spans_received(received: dict[str, list[Any]]) -> list[Any]:
    """Every span in the trace requests received so far."""
    return [
        span
        for request in received.get("/v1/traces", [])
        for resource_spans in request.resource_spans
        for scope in resource_spans.scope_spans
        for span in scope.spans
    ]
