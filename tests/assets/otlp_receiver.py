#!/usr/bin/env python3
"""A local OTLP/HTTP trace receiver for the e2e tests.

Decodes ExportTraceServiceRequest bodies with the official protobuf schema (PyPI
`opentelemetry-proto`) and writes one JSON line per span.

    python otlp_receiver.py --port 0 --out spans.jsonl

prints `LISTENING <port>` once bound, accepts `POST /v1/traces` with
`content-type: application/x-protobuf` (optionally `content-encoding: gzip`), and answers 200
with an empty ExportTraceServiceResponse. Each line:

    {"trace_id", "span_id", "parent_span_id" (hex, "" when none), "name", "kind" (e.g.
     "SPAN_KIND_CLIENT"), "kind_code", "start_time_unix_nano", "end_time_unix_nano",
     "status_code" (e.g. "STATUS_CODE_ERROR"), "status_message", "flags",
     "attributes" {key: typed value}, "events" [names], "event_times" [ns],
     "links" [{"trace_id", "span_id", "attributes"}],
     "resource" {key: typed value}, "scope", "headers" {x-* request headers, lower-case}}

`--fail-status N` answers every request with status N instead (for failure tests).
"""

import argparse
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def any_value(v):
    """An AnyValue as a plain JSON value (int, float, bool, str, list, dict, or hex bytes)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "otlp-receiver"

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def reply(self, status, body=b"", ctype="application/x-protobuf"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.split("?")[0] != "/v1/traces":
            return self.reply(404, b"not found\n", "text/plain")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-protobuf":
            return self.reply(415, b"want application/x-protobuf\n", "text/plain")
        if self.server.fail_status:
            return self.reply(self.server.fail_status, b"failing on purpose\n", "text/plain")
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest()
        try:
            req.ParseFromString(body)
        except Exception as e:  # noqa: BLE001 - any decode error is a bad request
            return self.reply(400, f"bad protobuf: {e}\n".encode(), "text/plain")
        lines = []
        for rs in req.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    lines.append(
                        json.dumps(
                            {
                                "trace_id": sp.trace_id.hex(),
                                "span_id": sp.span_id.hex(),
                                "parent_span_id": sp.parent_span_id.hex(),
                                "name": sp.name,
                                "kind": Span.SpanKind.Name(sp.kind),
                                "kind_code": sp.kind,
                                "start_time_unix_nano": sp.start_time_unix_nano,
                                "end_time_unix_nano": sp.end_time_unix_nano,
                                "status_code": Status.StatusCode.Name(sp.status.code),
                                "status_message": sp.status.message,
                                "flags": sp.flags,
                                "attributes": attrs(sp.attributes),
                                "events": [ev.name for ev in sp.events],
                                "event_times": [ev.time_unix_nano for ev in sp.events],
                                "links": [
                                    {"trace_id": ln.trace_id.hex(),
                                     "span_id": ln.span_id.hex(),
                                     "attributes": attrs(ln.attributes)}
                                    for ln in sp.links
                                ],
                                "resource": resource,
                                "scope": ss.scope.name,
                                "headers": {
                                    k.lower(): v
                                    for k, v in self.headers.items()
                                    if k.lower().startswith("x-")
                                },
                            },
                            sort_keys=True,
                        )
                    )
        with self.server.out_lock:
            with open(self.server.out_path, "a", encoding="utf-8") as f:
                for line in lines:
                    f.write(line + "\n")
        self.reply(200, ExportTraceServiceResponse().SerializeToString())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", required=True, help="JSON lines file, one span a line (appended)")
    ap.add_argument("--fail-status", type=int, default=0)
    args = ap.parse_args()
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    srv.out_path = args.out
    srv.out_lock = threading.Lock()
    srv.fail_status = args.fail_status
    open(args.out, "a", encoding="utf-8").close()
    print(f"LISTENING {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
