"""A test OTLP/HTTP trace receiver: decodes POST /v1/traces with opentelemetry-proto's ExportTraceServiceRequest
and appends one JSON line per span (trace id, span id, parent id, name, kind, service.name, attributes) to a file.

Usage: python otlp_receiver.py OUT_FILE   (prints "listening on PORT" once it accepts connections)
"""

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

OUT = sys.argv[1]
LOCK = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind in ("string_value", "bool_value", "int_value", "double_value") else str(v)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces":
            self.send_error(404, "only /v1/traces")
            return
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if not self.headers.get("Content-Type", "").startswith("application/x-protobuf"):
            self.send_error(415, "application/x-protobuf only")
            return
        req = ExportTraceServiceRequest.FromString(body)
        lines = []
        for rs in req.resource_spans:
            resource = {a.key: value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    lines.append(
                        {
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "name": s.name,
                            "kind": Span.SpanKind.Name(s.kind),
                            "service": resource.get("service.name"),
                            "scope": ss.scope.name,
                            "attributes": {a.key: value(a.value) for a in s.attributes},
                        }
                    )
        with LOCK, open(OUT, "a") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, fmt, *args):
        print("receiver:", fmt % args, flush=True)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
