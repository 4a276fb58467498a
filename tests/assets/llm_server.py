#!/usr/bin/env python3
"""Deterministic OpenAI-compatible test LLM server for llmprobe's e2e tests.

Python standard library only.

    python3 llm_server.py [--host 127.0.0.1] [--port 0]
                          [--tls-cert cert.pem --tls-key key.pem]
                          [--ttft-ms 200] [--gap-ms 50] [--chunks 8] [--log]

Prints exactly one line "LISTENING <port>" on stdout (flushed) once the socket
listens; nothing else is ever written to stdout. With --log, one line per
request (connection id, method, path, status) goes to stderr; request headers
are never printed (they carry API keys).

Endpoints
  POST /v1/chat/completions, /chat/completions   (stream and non-stream)
  GET  /health                                    200 "ok" (text/plain)
  POST /v1/other                                  200 {"ok":true}
  GET  /_stats                                    200 {"connections":N,"requests":N,"completions":N}
                                                  (server-side counters; the /_stats
                                                  request itself is counted too)
  anything else                                   404 OpenAI-style error JSON

Per-request overrides (request headers, integers):
  x-test-ttft-ms, x-test-gap-ms, x-test-chunks, x-test-status (e.g. 429)

Token accounting (deterministic):
  prompt_tokens     = 3 + number of whitespace-separated words over all
                      messages' string "content" (text parts of list content
                      are counted too)
  completion_tokens = chunks (one "tokN " per content chunk)
  response model    = request model + "-0001"
"""

import argparse
import itertools
import json
import socket
import ssl
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_DISCONNECT_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError,
                      ssl.SSLError, ssl.SSLEOFError, socket.timeout, OSError)


class _Counters:
    def __init__(self):
        self._lock = threading.Lock()
        self._req = itertools.count(1)
        self.connections = 0
        self.requests = 0
        self.completions = 0

    def next_id(self):
        with self._lock:
            self.completions += 1
            return next(self._req)

    def conn(self):
        with self._lock:
            self.connections += 1
            return self.connections

    def request(self):
        with self._lock:
            self.requests += 1


COUNTERS = _Counters()


class LLMServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, cfg, ssl_ctx=None):
        self.cfg = cfg
        self.ssl_ctx = ssl_ctx
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.ssl_ctx is not None:
            # Handshake happens in the handler thread (setup()), not in the
            # accept loop, so a slow/broken client cannot stall other clients.
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        # Quiet: client disconnects / bad handshakes are expected in tests.
        if self.cfg.log:
            exc = sys.exc_info()[1]
            print(f"[llm_server] error from {client_address}: {exc!r}",
                  file=sys.stderr, flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections are dropped after this

    def version_string(self):
        return "llmprobe-test-llm/1.0"
    # ---- plumbing -------------------------------------------------------

    def setup(self):
        self.conn_id = COUNTERS.conn()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()  # errors -> handle_error (quiet)
        super().setup()

    def handle(self):
        try:
            super().handle()
        except _DISCONNECT_ERRORS:
            self.close_connection = True

    def log_message(self, fmt, *args):  # never log headers
        pass

    def log_request(self, code="-", size="-"):
        if self.server.cfg.log:
            path = self.path.split("?", 1)[0]
            print(f"[llm_server] conn={self.conn_id} {self.command} {path} {code}",
                  file=sys.stderr, flush=True)

    def _int_header(self, name, default):
        v = self.headers.get(name)
        if v is None:
            return default
        try:
            return int(v.strip())
        except ValueError:
            return default

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionResetError("eof in chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after chunk data
            return b"".join(parts)
        n = self._int_header("Content-Length", 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send_bytes(self, status, body, ctype, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _encoding(self):
        """Content-Encoding for this response: `x-test-encoding: gzip|deflate` asks for one;
        with --honor-accept-encoding the client's Accept-Encoding is followed (gzip first)."""
        forced = (self.headers.get("x-test-encoding") or "").strip().lower()
        if forced in ("gzip", "deflate"):
            return forced
        if self.server.cfg.honor_accept_encoding:
            accepted = [a.split(";")[0].strip().lower()
                        for a in (self.headers.get("Accept-Encoding") or "").split(",")]
            for enc in ("gzip", "deflate"):
                if enc in accepted:
                    return enc
        return None

    @staticmethod
    def _compressor(enc):
        # gzip: wbits 31; deflate (RFC 9110): zlib-wrapped, wbits 15.
        return zlib.compressobj(wbits=31 if enc == "gzip" else 15)

    def _send_json(self, status, obj, extra=None):
        body = json.dumps(obj, separators=(",", ":")).encode()
        enc = self._encoding()
        if enc:
            c = self._compressor(enc)
            body = c.compress(body) + c.flush()
            extra = dict(extra or {}, **{"Content-Encoding": enc})
        self._send_bytes(status, body, "application/json", extra)

    def _write_chunk(self, data: bytes):
        # one HTTP chunk == one write() == one TCP segment / TLS record
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _error(self, status, message, etype, code=None):
        self._send_json(status, {"error": {"message": message, "type": etype,
                                           "code": code if code is not None else str(status)}},
                        extra={"retry-after": "1"} if status == 429 else None)

    # ---- dispatch -------------------------------------------------------

    def _dispatch(self):
        COUNTERS.request()
        path = self.path.split("?", 1)[0]
        body = self._read_body() if self.command in ("POST", "PUT", "PATCH") else b""

        forced = self._int_header("x-test-status", 0)
        if forced and forced != 200:
            if forced == 429:
                return self._error(429, "rate limited", "rate_limit_error", "429")
            etype = "server_error" if forced >= 500 else "invalid_request_error"
            return self._error(forced, f"forced status {forced}", etype)

        if self.command == "GET" and path == "/health":
            return self._send_bytes(200, b"ok", "text/plain")
        if self.command == "GET" and path == "/_stats":
            return self._send_json(200, {"connections": COUNTERS.connections,
                                         "requests": COUNTERS.requests,
                                         "completions": COUNTERS.completions})
        if self.command == "POST" and path == "/v1/other":
            return self._send_json(200, {"ok": True})
        if self.command == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            return self._chat(body)
        return self._error(404, f"Unknown request URL: {self.command} {path}",
                           "invalid_request_error", "unknown_url")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

    # ---- chat completions ----------------------------------------------

    @staticmethod
    def _prompt_tokens(req):
        n = 0
        for m in req.get("messages") or []:
            if not isinstance(m, dict):
                continue
            c = m.get("content")
            if isinstance(c, str):
                n += len(c.split())
            elif isinstance(c, list):
                for p in c:
                    if isinstance(p, dict) and isinstance(p.get("text"), str):
                        n += len(p["text"].split())
        return n + 3

    def _chat(self, body):
        cfg = self.server.cfg
        try:
            req = json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as e:
            return self._error(400, f"invalid JSON body: {e}", "invalid_request_error",
                               "invalid_json")

        ttft = max(0, self._int_header("x-test-ttft-ms", cfg.ttft_ms)) / 1000.0
        gap = max(0, self._int_header("x-test-gap-ms", cfg.gap_ms)) / 1000.0
        nchunks = max(0, self._int_header("x-test-chunks", cfg.chunks))

        rid = COUNTERS.next_id()
        cid = f"chatcmpl-{rid}"
        model = str(req.get("model") or "unknown") + "-0001"
        created = int(time.time())
        p = self._prompt_tokens(req)
        usage = {"prompt_tokens": p, "completion_tokens": nchunks, "total_tokens": p + nchunks,
                 "prompt_tokens_details": {"cached_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0}}
        hdrs = {"x-request-id": f"req-{rid}"}

        if not req.get("stream"):
            time.sleep(ttft)
            content = "".join(f"tok{i} " for i in range(nchunks))
            return self._send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0,
                             "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": usage}, extra=hdrs)

        so = req.get("stream_options")
        include_usage = isinstance(so, dict) and so.get("include_usage") is True

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", hdrs["x-request-id"])
        enc = self._encoding()
        if enc:
            self.send_header("Content-Encoding", enc)
        self.end_headers()
        self.wfile.flush()
        comp = self._compressor(enc) if enc else None

        def send(data):
            # Compressed streams are flushed per event (Z_SYNC_FLUSH) so each one is decodable
            # on arrival, as real servers that compress SSE do.
            if comp is not None:
                data = comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)
            self._write_chunk(data)

        def event(choices, with_usage=None):
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "choices": choices}
            if include_usage:
                obj["usage"] = with_usage
            return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

        try:
            time.sleep(ttft)
            for i in range(nchunks):
                if i > 0:
                    time.sleep(gap)
                delta = {"role": "assistant", "content": f"tok{i} "} if i == 0 \
                    else {"content": f"tok{i} "}
                send(event([{"index": 0, "delta": delta, "finish_reason": None}]))
            send(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
            if include_usage:
                send(event([], usage))
            send(b"data: [DONE]\n\n")
            if comp is not None:
                self._write_chunk(comp.flush())
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except _DISCONNECT_ERRORS:
            self.close_connection = True  # client went away mid-stream: stop quietly


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--ttft-ms", type=int, default=200)
    ap.add_argument("--gap-ms", type=int, default=50)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--honor-accept-encoding", action="store_true",
                    help="compress responses (gzip, else deflate) when the client accepts it")
    ap.add_argument("--log", action="store_true",
                    help="one line per request (method, path, status) on stderr")
    cfg = ap.parse_args()

    ctx = None
    if cfg.tls_cert or cfg.tls_key:
        if not (cfg.tls_cert and cfg.tls_key):
            ap.error("--tls-cert and --tls-key go together")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        ctx.set_alpn_protocols(["http/1.1"])

    srv = LLMServer((cfg.host, cfg.port), Handler, cfg, ctx)
    print(f"LISTENING {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
