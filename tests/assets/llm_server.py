#!/usr/bin/env python3
"""Deterministic multi-dialect test LLM server for llmprobe's e2e tests.

Python standard library only.

    python3 llm_server.py [--host 127.0.0.1] [--port 0]
                          [--tls-cert cert.pem --tls-key key.pem]
                          [--ttft-ms 200] [--gap-ms 50] [--chunks 8]
                          [--honor-accept-encoding] [--log]

Prints exactly one line "LISTENING <port>" on stdout (flushed) once the socket
listens; nothing else is ever written to stdout. With --log, one line per
request (connection id, method, path, status) goes to stderr; request headers
are never printed (they carry API keys).

Endpoints
  POST /v1/chat/completions, /chat/completions,
       /compatible-mode/v1/chat/completions      OpenAI chat (stream and non-stream)
  POST /v1/completions, /completions              OpenAI legacy completions
  POST /v1/embeddings, /embeddings                OpenAI embeddings (float or base64)
  POST /v1/responses, /responses                  OpenAI Responses API
  POST /v1/messages                               Anthropic Messages
  POST /v1beta/models/{m}:generateContent         Gemini (also /v1/models/...)
  POST /v1beta/models/{m}:streamGenerateContent   Gemini stream: ?alt=sse -> SSE,
                                                  otherwise one streamed JSON array
  POST /api/chat, /api/generate                   Ollama (NDJSON; "stream" defaults true)
  POST /api/v1/services/aigc/text-generation/generation
                                                  DashScope native (SSE with
                                                  "X-DashScope-SSE: enable")
  POST /v1/chat-messages, /v1/completion-messages,
       /v1/workflows/run                          Dify service API ("response_mode"
                                                  "streaming": SSE with an "event" member;
                                                  "blocking": one JSON). Streams send
                                                  "event: ping" first; message_end carries
                                                  usage, total_price (prompt 0.001, completion
                                                  0.002 USD per 1k tokens) and latency;
                                                  workflows send node_started/node_finished
                                                  for start, llm and end nodes and
                                                  text_chunk events. inputs.x_test_stream_error_after
                                                  = K: an "error" event after K chunks
  GET  /health                                    200 "ok" (text/plain)
  POST /v1/other                                  200 {"ok":true}
  GET  /_stats                                    200 {"connections":N,"requests":N,"completions":N}
                                                  (server-side counters; the /_stats
                                                  request itself is counted too)
  anything else                                   404 OpenAI-style error JSON

Per-request overrides (request headers):
  x-test-ttft-ms, x-test-gap-ms, x-test-chunks    integers, override the CLI defaults
  x-test-status: N                                answer status N (dialect's error shape;
                                                  retry-after: 1 on 429/503/529)
  x-test-reasoning-chunks: N                      N reasoning chunks before the content
  x-test-reasoning-field: reasoning               OpenAI chat: field name (default
                                                  reasoning_content)
  x-test-tool-call: 1                             OpenAI chat / Anthropic: content chunks
                                                  become tool-call argument pieces
  x-test-tool-call: 0                             never answer with tool calls (see below)

Tool calls (OpenAI chat and Anthropic Messages, stream and non-stream): a request that
declares `tools` and whose last message is not a tool result (OpenAI: a `role: "tool"`
message; Anthropic: a user message with a `tool_result` block) is answered with one tool
call per declared tool (at most 4, in the order declared; the first one's arguments are the
content chunks, streamed as argument pieces; the others' are `{"q":"more"}`, each sent
whole in one delta) and finish reason `tool_calls` / `tool_use`. Call ids: OpenAI
`call_<rid>` then `call_<rid>_<k>`, Anthropic `toolu_<rid, 24 digits>` then
`toolu_<rid>_<k>`. A request that carries tool results gets a normal answer.
  x-test-keepalive: 1                             OpenAI-family SSE: ": keep-alive" comment
                                                  lines between chunks; non-stream: "\n"
                                                  before the JSON body
  x-test-stream-error-after: K                    after K content chunks send the
                                                  dialect's in-stream error, then end
  x-test-truncate-after: K                        after K content chunks end the body
                                                  cleanly with no terminal event
  x-test-finish: length                           finish reason "length" (or equivalent)
  x-test-encoding: gzip|deflate|zstd              compress the response body
  x-test-burst: K                                 send chunks in groups of K back to back,
                                                  the gap only between groups (high event
                                                  rates with few timer wakeups; benchmarks)
  x-test-chunk-bytes: B                           OpenAI chat: each content chunk's text is
                                                  B bytes (a repeated one-token word) instead
                                                  of one token; a non-stream body is written
                                                  in 1 MiB pieces, never held whole (large
                                                  responses for memory benchmarks)

Token accounting (deterministic, every dialect):
  prompt tokens    = 3 + number of whitespace-separated words of all prompt text
  output tokens    = chunks (one "tokN " per content chunk)
  reasoning tokens = reasoning chunks (one "thinkN " each); they are included in the
                     dialect's total output count (completion_tokens, output_tokens,
                     eval_count; Gemini reports them as thoughtsTokenCount)
  response model   = request model + "-0001" (Gemini modelVersion: model + "-001")
"""

import argparse
import base64
import datetime
import itertools
import json
import re
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# Chunk texts: each is exactly one token in OpenAI's o200k_base and cl100k_base vocabularies, like
# the single-token deltas real servers stream, so token estimates can be checked exactly.
TOK = [" Hello", " there", " from", " the", " test", " server", " and", " its", " small", " model"]
THINK = [" Let", " me", " think", " about", " this", " first"]

_DISCONNECT_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError,
                      ssl.SSLError, ssl.SSLEOFError, socket.timeout, OSError)


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


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


# ---- compression -----------------------------------------------------------

class _ZlibEncoder:
    """gzip (wbits 31) or deflate (RFC 9110: zlib-wrapped, wbits 15)."""

    def __init__(self, enc):
        self._c = zlib.compressobj(wbits=31 if enc == "gzip" else 15)

    def chunk(self, data):
        # Flushed per event (Z_SYNC_FLUSH) so each one is decodable on arrival.
        return self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)

    def end(self):
        return self._c.flush()

    def whole(self, data):
        return self._c.compress(data) + self._c.flush()


class _ZstdEncoder:
    """A valid zstd frame (RFC 8878) built from *raw* (stored) blocks: standard library
    only, so nothing is actually compressed, but any zstd decoder must parse the framing,
    incrementally, one block per event."""
    _MAX_BLOCK = 128 * 1024

    def __init__(self):
        self._started = False

    def _header(self):
        if self._started:
            return b""
        self._started = True
        # magic, Frame_Header_Descriptor 0 (no FCS, not single segment, no checksum, no
        # dict), Window_Descriptor 0x38 (exponent 7 -> 128 KiB window)
        return b"\x28\xb5\x2f\xfd\x00\x38"

    @staticmethod
    def _block(data, last):
        hdr = (len(data) << 3) | (0 << 1) | (1 if last else 0)  # Block_Type 0 = Raw
        return struct.pack("<I", hdr)[:3] + data

    def chunk(self, data):
        out = [self._header()]
        for i in range(0, len(data), self._MAX_BLOCK):
            out.append(self._block(data[i:i + self._MAX_BLOCK], False))
        return b"".join(out)

    def end(self):
        return self._header() + self._block(b"", True)

    def whole(self, data):
        return self.chunk(data) + self.end()


def _encoder(enc):
    if enc is None:
        return None
    return _ZstdEncoder() if enc == "zstd" else _ZlibEncoder(enc)


# ---- request parameters ----------------------------------------------------

class _Plan:
    """Timing and shape of one generation, from the CLI defaults and x-test-* headers."""

    def __init__(self, h):
        cfg = h.server.cfg
        self.ttft = max(0, h._int_header("x-test-ttft-ms", cfg.ttft_ms)) / 1000.0
        self.gap = max(0, h._int_header("x-test-gap-ms", cfg.gap_ms)) / 1000.0
        self.n = max(0, h._int_header("x-test-chunks", cfg.chunks))
        self.burst = max(1, h._int_header("x-test-burst", 1))
        self.chunk_bytes = max(0, h._int_header("x-test-chunk-bytes", 0))
        self.r = max(0, h._int_header("x-test-reasoning-chunks", 0))
        self.reasoning_field = (h.headers.get("x-test-reasoning-field") or "").strip() \
            or "reasoning_content"
        self.tool_header = h._int_header("x-test-tool-call", None)
        self.tool = self.tool_header == 1
        self.tool_names = []        # names of the tools called, in order (set by want_tools)
        self.keepalive = h._int_header("x-test-keepalive", 0) == 1
        self.length = (h.headers.get("x-test-finish") or "").strip().lower() == "length"
        err = h._int_header("x-test-stream-error-after", None)
        trunc = h._int_header("x-test-truncate-after", None)
        self.cut = None             # None | "error" | "truncate"
        self.cut_after = self.n
        if err is not None and err >= 0:
            self.cut, self.cut_after = "error", min(err, self.n)
        elif trunc is not None and trunc >= 0:
            self.cut, self.cut_after = "truncate", min(trunc, self.n)
        self.t0 = time.monotonic()
        self.t_first = None

    def want_tools(self, req, name_of, default_name):
        """Decides whether this answer is tool calls (see "Tool calls" above) and whose: the
        x-test-tool-call header, else the request's declared tools and its last message.
        `name_of(tool)` reads a declared tool's name."""
        tools = req.get("tools")
        tools = [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
        names = [n for n in (name_of(t) for t in tools) if isinstance(n, str) and n]
        if self.tool_header is None and names and not _carries_tool_result(req):
            self.tool = True
            self.tool_names = names[:4]
        elif self.tool:
            self.tool_names = (names or [default_name])[:1]

    def piece(self, i):
        """Text of content chunk i: one token, or chunk_bytes bytes of repeated words."""
        if not self.chunk_bytes:
            return TOK[i % len(TOK)]
        word = TOK[i % len(TOK)]
        return (word * (self.chunk_bytes // len(word) + 1))[:self.chunk_bytes]

    def content(self, upto=None):
        return "".join(TOK[i % len(TOK)] for i in range(self.n if upto is None else upto))

    def reasoning(self, upto=None):
        return "".join(THINK[i % len(THINK)] for i in range(self.r if upto is None else upto))

    def tool_piece(self, i):
        s = TOK[i % len(TOK)]
        if i == 0:
            s = '{"q":"' + s
        if i == self.n - 1:
            s += '"}'
        return s

    def tool_args(self):
        return "".join(self.tool_piece(i) for i in range(self.n))

    def slots(self, ping=None):
        """Sleeps to each chunk's time and yields ("r", i) for the reasoning chunks, then
        ("c", i) for the content chunks (up to the cut), then ("cut", K) if the stream is cut.
        The first slot comes after ttft, every next one gap later. With no slot at all, the
        caller's terminal events come after ttft. `ping(bytes)` is called halfway through
        every wait when keep-alive comments are on."""
        items = [("r", i) for i in range(self.r)] + [("c", i) for i in range(self.cut_after)]
        if self.cut:
            items.append(("cut", self.cut_after))
        if not items:
            self._wait(self.ttft, ping)
        for k, it in enumerate(items):
            if k == 0:
                self._wait(self.ttft, ping)
            elif k % self.burst == 0:
                self._wait(self.gap, ping)
            if self.t_first is None:
                self.t_first = time.monotonic()
            yield it

    def _wait(self, secs, ping):
        if ping is not None and self.keepalive:
            time.sleep(secs / 2)
            ping()
            time.sleep(secs / 2)
        else:
            time.sleep(secs)


def _carries_tool_result(req):
    """The request's last message is a tool result (OpenAI role "tool", Anthropic tool_result
    block)."""
    msgs = req.get("messages")
    if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict):
        return False
    last = msgs[-1]
    if last.get("role") == "tool":
        return True
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def _words(v):
    """Words of prompt text: strings, and the content/text/parts of nested objects."""
    if isinstance(v, str):
        return len(v.split())
    if isinstance(v, list):
        if v and all(isinstance(x, int) for x in v):
            return len(v)  # a pre-tokenized prompt
        return sum(_words(x) for x in v)
    if isinstance(v, dict):
        return sum(_words(v[k]) for k in ("content", "text", "parts") if k in v)
    return 0


def _now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


_GEMINI_RE = re.compile(r"^/v1(?:beta|alpha)?/models/([^/:]+):(generateContent|streamGenerateContent)$")
_DASHSCOPE_PATH = "/api/v1/services/aigc/text-generation/generation"


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
        """Content-Encoding for this response: `x-test-encoding: gzip|deflate|zstd` asks for
        one; with --honor-accept-encoding the client's Accept-Encoding is followed (gzip
        first, then deflate; zstd only on request)."""
        forced = (self.headers.get("x-test-encoding") or "").strip().lower()
        if forced in ("gzip", "deflate", "zstd"):
            return forced
        if self.server.cfg.honor_accept_encoding:
            accepted = [a.split(";")[0].strip().lower()
                        for a in (self.headers.get("Accept-Encoding") or "").split(",")]
            for enc in ("gzip", "deflate"):
                if enc in accepted:
                    return enc
        return None

    def _send_json(self, status, obj, extra=None, ctype="application/json", plan=None):
        body = _dumps(obj)
        enc = self._encoding()
        if plan is not None and plan.keepalive and status == 200:
            # DeepSeek-style: blank lines while the answer is being computed, then the JSON.
            return self._send_json_keepalive(body, ctype, extra, enc, plan)
        if enc:
            body = _encoder(enc).whole(body)
            extra = dict(extra or {}, **{"Content-Encoding": enc})
        self._send_bytes(status, body, ctype, extra)

    def _send_json_keepalive(self, body, ctype, extra, enc, plan):
        st = self._begin_stream(ctype, extra)
        time.sleep(plan.ttft / 2)
        st.send(b"\n")
        time.sleep(plan.ttft / 2)
        st.send(body)
        st.end()

    def _write_chunk(self, data: bytes):
        # one HTTP chunk == one write() == one TCP segment / TLS record
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _begin_stream(self, ctype, extra=None):
        """Sends 200 + headers of a chunked (optionally compressed) body; returns an object
        with send(bytes) (one HTTP chunk per call) and end() (terminating 0-size chunk)."""
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        if ctype == "text/event-stream":
            self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        enc = self._encoding()
        if enc:
            self.send_header("Content-Encoding", enc)
        self.end_headers()
        self.wfile.flush()
        return _Out(self, _encoder(enc))

    # ---- errors ---------------------------------------------------------

    @staticmethod
    def _dialect(path):
        if path == "/v1/messages":
            return "anthropic"
        if _GEMINI_RE.match(path):
            return "gemini"
        if path in ("/api/chat", "/api/generate"):
            return "ollama"
        if path == _DASHSCOPE_PATH:
            return "dashscope"
        if path in _DIFY_PATHS:
            return "dify"
        return "openai"

    def _error(self, status, message, etype, code=None, dialect="openai"):
        extra = {"retry-after": "1"} if status in (429, 503, 529) else None
        if dialect == "anthropic":
            atype = {400: "invalid_request_error", 401: "authentication_error",
                     403: "permission_error", 404: "not_found_error",
                     413: "request_too_large", 429: "rate_limit_error",
                     529: "overloaded_error"}.get(status, "api_error")
            return self._send_json(status, {"type": "error",
                                            "error": {"type": atype, "message": message}},
                                   extra=dict(extra or {}, **{"request-id": "req_err"}))
        if dialect == "gemini":
            gstat = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                     404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                     503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}.get(status, "UNKNOWN")
            return self._send_json(status, {"error": {"code": status, "message": message,
                                                      "status": gstat}}, extra=extra)
        if dialect == "ollama":
            return self._send_json(status, {"error": message}, extra=extra)
        if dialect == "dify":
            dcode = {400: "invalid_param", 404: "app_unavailable",
                     429: "too_many_requests"}.get(status, "internal_server_error")
            return self._send_json(status, {"code": dcode, "message": message,
                                            "status": status}, extra=extra)
        if dialect == "dashscope":
            dcode = {400: "InvalidParameter", 401: "InvalidApiKey", 404: "ModelNotFound",
                     429: "Throttling.RateQuota"}.get(status, "InternalError")
            return self._send_json(status, {"code": dcode, "message": message,
                                            "request_id": "00000000-0000-4000-8000-000000000000"},
                                   extra=extra)
        self._send_json(status, {"error": {"message": message, "type": etype,
                                           "code": code if code is not None else str(status)}},
                        extra=extra)

    # ---- dispatch -------------------------------------------------------

    def _dispatch(self):
        COUNTERS.request()
        path, _, query = self.path.partition("?")
        self.query = urllib.parse.parse_qs(query)
        body = self._read_body() if self.command in ("POST", "PUT", "PATCH") else b""
        dialect = self._dialect(path)

        forced = self._int_header("x-test-status", 0)
        if forced and forced != 200:
            if forced == 429:
                return self._error(429, "rate limited", "rate_limit_error", "429", dialect)
            etype = "server_error" if forced >= 500 else "invalid_request_error"
            return self._error(forced, f"forced status {forced}", etype, dialect=dialect)

        if self.command == "GET" and path == "/health":
            return self._send_bytes(200, b"ok", "text/plain")
        if self.command == "GET" and path == "/_stats":
            return self._send_json(200, {"connections": COUNTERS.connections,
                                         "requests": COUNTERS.requests,
                                         "completions": COUNTERS.completions})
        if self.command == "POST" and path == "/v1/other":
            return self._send_json(200, {"ok": True})
        route = None
        if self.command == "POST":
            if path in ("/v1/chat/completions", "/chat/completions",
                        "/compatible-mode/v1/chat/completions"):
                route = self._chat
            elif path in ("/v1/completions", "/completions"):
                route = self._completions
            elif path in ("/v1/embeddings", "/embeddings"):
                route = self._embeddings
            elif path in ("/v1/responses", "/responses"):
                route = self._responses
            elif dialect == "anthropic":
                route = self._anthropic
            elif dialect == "gemini":
                m = _GEMINI_RE.match(path)
                return self._with_json(body, lambda req: self._gemini(req, m.group(1),
                                                                      m.group(2)), dialect)
            elif path == "/api/chat":
                route = lambda req: self._ollama(req, chat=True)  # noqa: E731
            elif path == "/api/generate":
                route = lambda req: self._ollama(req, chat=False)  # noqa: E731
            elif dialect == "dashscope":
                route = self._dashscope
            elif dialect == "dify":
                route = lambda req: self._dify(req, _DIFY_PATHS[path])  # noqa: E731
        if route is not None:
            return self._with_json(body, route, dialect)
        return self._error(404, f"Unknown request URL: {self.command} {path}",
                           "invalid_request_error", "unknown_url")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

    def _with_json(self, body, route, dialect):
        try:
            req = json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as e:
            return self._error(400, f"invalid JSON body: {e}", "invalid_request_error",
                               "invalid_json", dialect)
        try:
            return route(req)
        except _DISCONNECT_ERRORS:
            self.close_connection = True  # client went away mid-stream: stop quietly

    # ---- OpenAI chat completions ----------------------------------------

    @staticmethod
    def _prompt_tokens(req):
        return _words(req.get("messages") or []) + 3

    def _chat(self, req):
        plan = _Plan(self)
        rid = COUNTERS.next_id()
        cid = f"chatcmpl-{rid}"
        model = str(req.get("model") or "unknown") + "-0001"
        created = int(time.time())
        p = self._prompt_tokens(req)
        out = plan.r + plan.n
        usage = {"prompt_tokens": p, "completion_tokens": out, "total_tokens": p + out,
                 "prompt_tokens_details": {"cached_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": plan.r}}
        hdrs = {"x-request-id": f"req-{rid}"}
        plan.want_tools(req, lambda t: (t.get("function") or {}).get("name"), "get_weather")
        finish = "length" if plan.length else ("tool_calls" if plan.tool else "stop")
        rfield = plan.reasoning_field
        tool_name = plan.tool_names[0] if plan.tool else "get_weather"
        call_id = f"call_{rid}"
        # The calls after the first: (index, id, name), their arguments sent whole.
        more_calls = [(k, f"call_{rid}_{k}", n) for k, n in enumerate(plan.tool_names)][1:]

        if not req.get("stream") and plan.chunk_bytes and not (plan.tool or plan.r):
            time.sleep(plan.ttft)
            return self._send_large_chat(plan, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "@@"},
                             "finish_reason": finish}],
                "usage": usage}, hdrs)
        if not req.get("stream"):
            if plan.tool:
                message = {"role": "assistant", "content": None,
                           "tool_calls": [{"id": call_id, "type": "function",
                                           "function": {"name": tool_name,
                                                        "arguments": plan.tool_args()}}]}
                for _, k_id, k_name in more_calls:
                    message["tool_calls"].append({
                        "id": k_id, "type": "function",
                        "function": {"name": k_name, "arguments": '{"q":"more"}'}})
            else:
                message = {"role": "assistant", "content": plan.content()}
            if plan.r:
                message[rfield] = plan.reasoning()
            if not plan.keepalive:
                time.sleep(plan.ttft)
            return self._send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage}, extra=hdrs, plan=plan)

        so = req.get("stream_options")
        include_usage = isinstance(so, dict) and so.get("include_usage") is True
        st = self._begin_stream("text/event-stream", hdrs)

        def event(choices, with_usage=None):
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "choices": choices}
            if include_usage:
                obj["usage"] = with_usage
            return b"data: " + _dumps(obj) + b"\n\n"

        first = True
        for kind, i in plan.slots(ping=st.keepalive):
            if kind == "cut":
                if plan.cut == "error":
                    st.send(b"data: " + _dumps({"error": {
                        "message": "The server had an error while processing your request. "
                                   "Sorry about that!",
                        "type": "server_error", "param": None, "code": None}}) + b"\n\n")
                return st.end()
            if kind == "r":
                delta = {"role": "assistant", "content": None} if first else {"content": None}
                delta[rfield] = THINK[i % len(THINK)]
            elif plan.tool:
                tc = {"index": 0, "function": {"arguments": plan.tool_piece(i)}}
                if i == 0:
                    tc = {"index": 0, "id": call_id, "type": "function",
                          "function": {"name": tool_name, "arguments": plan.tool_piece(0)}}
                delta = {"role": "assistant", "content": None} if first else {}
                delta["tool_calls"] = [tc]
            else:
                delta = {"role": "assistant", "content": plan.piece(i)} if first \
                    else {"content": plan.piece(i)}
            first = False
            st.send(event([{"index": 0, "delta": delta, "finish_reason": None}]))
        for k, k_id, k_name in more_calls:
            st.send(event([{"index": 0, "delta": {"tool_calls": [{
                "index": k, "id": k_id, "type": "function",
                "function": {"name": k_name, "arguments": '{"q":"more"}'}}]},
                "finish_reason": None}]))
        st.send(event([{"index": 0, "delta": {}, "finish_reason": finish}]))
        if include_usage:
            st.send(event([], usage))
        st.send(b"data: [DONE]\n\n")
        st.end()

    def _send_large_chat(self, plan, obj, hdrs):
        """A non-stream body whose content is chunks x chunk_bytes bytes, written in 1 MiB pieces
        with its Content-Length, so a 1 GB answer never sits in this process's memory."""
        head, tail = _dumps(obj).split(b'"@@"', 1)
        head += b'"'
        tail = b'"' + tail
        size = plan.n * plan.chunk_bytes
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(head) + size + len(tail)))
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(head)
        block = "".join(plan.piece(i) for i in range(10)).encode()
        block = (block * ((1 << 20) // len(block) + 1))[:1 << 20]
        left = size
        while left > 0:
            part = block[:left]
            self.wfile.write(part)
            left -= len(part)
        self.wfile.write(tail)
        self.wfile.flush()

    # ---- OpenAI legacy completions --------------------------------------

    def _completions(self, req):
        plan = _Plan(self)
        plan.r = 0
        rid = COUNTERS.next_id()
        cid = f"cmpl-{rid}"
        model = str(req.get("model") or "unknown") + "-0001"
        created = int(time.time())
        p = _words(req.get("prompt") or "") + 3
        usage = {"prompt_tokens": p, "completion_tokens": plan.n,
                 "total_tokens": p + plan.n}
        hdrs = {"x-request-id": f"req-{rid}"}
        finish = "length" if plan.length else "stop"

        if not req.get("stream"):
            if not plan.keepalive:
                time.sleep(plan.ttft)
            return self._send_json(200, {
                "id": cid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"text": plan.content(), "index": 0, "logprobs": None,
                             "finish_reason": finish}],
                "usage": usage}, extra=hdrs, plan=plan)

        so = req.get("stream_options")
        include_usage = isinstance(so, dict) and so.get("include_usage") is True
        st = self._begin_stream("text/event-stream", hdrs)

        def event(choices, with_usage=None):
            obj = {"id": cid, "object": "text_completion", "created": created,
                   "choices": choices, "model": model}
            if include_usage:
                obj["usage"] = with_usage
            return b"data: " + _dumps(obj) + b"\n\n"

        for kind, i in plan.slots(ping=st.keepalive):
            if kind == "cut":
                if plan.cut == "error":
                    st.send(b"data: " + _dumps({"error": {
                        "message": "The server had an error while processing your request. "
                                   "Sorry about that!",
                        "type": "server_error", "param": None, "code": None}}) + b"\n\n")
                return st.end()
            st.send(event([{"text": TOK[i % len(TOK)], "index": 0, "logprobs": None,
                            "finish_reason": None}]))
        st.send(event([{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]))
        if include_usage:
            st.send(event([], usage))
        st.send(b"data: [DONE]\n\n")
        st.end()

    # ---- OpenAI embeddings ----------------------------------------------

    def _embeddings(self, req):
        plan = _Plan(self)
        rid = COUNTERS.next_id()
        model = str(req.get("model") or "unknown") + "-0001"
        inp = req.get("input")
        if isinstance(inp, list) and inp and all(isinstance(x, (str, list)) for x in inp):
            inputs = inp
        else:
            inputs = [inp if inp is not None else ""]
        dims = req.get("dimensions")
        dims = dims if isinstance(dims, int) and 0 < dims <= 4096 else 8
        b64 = req.get("encoding_format") == "base64"
        data = []
        for idx in range(len(inputs)):
            # exactly representable in float32, so base64 round-trips bit-exactly
            vec = [((idx * dims + j) % 17 - 8) / 8.0 for j in range(dims)]
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": idx, "embedding": emb})
        p = _words(inputs) + 3
        time.sleep(plan.ttft)
        self._send_json(200, {"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": p, "total_tokens": p}},
                        extra={"x-request-id": f"req-{rid}"})

    # ---- OpenAI Responses API -------------------------------------------

    def _responses(self, req):
        plan = _Plan(self)
        rid = COUNTERS.next_id()
        resp_id, msg_id, rs_id = f"resp_{rid}", f"msg_{rid}", f"rs_{rid}"
        model = str(req.get("model") or "unknown") + "-0001"
        created = int(time.time())
        p = _words(req.get("input") or "") + _words(req.get("instructions") or "") + 3
        out = plan.r + plan.n
        usage = {"input_tokens": p, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": out, "output_tokens_details": {"reasoning_tokens": plan.r},
                 "total_tokens": p + out}
        hdrs = {"x-request-id": f"req-{rid}"}
        status_final = "incomplete" if plan.length else "completed"
        m_index = 1 if plan.r else 0

        def reasoning_item(done):
            return {"id": rs_id, "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": plan.reasoning()}] if done else []}

        def message_item(status, text=None):
            content = [] if text is None else [{"type": "output_text", "annotations": [],
                                                "logprobs": [], "text": text}]
            return {"id": msg_id, "type": "message", "status": status, "content": content,
                    "role": "assistant"}

        def response(status, output, with_usage):
            return {"id": resp_id, "object": "response", "created_at": created,
                    "status": status, "background": False, "error": None,
                    "incomplete_details": {"reason": "max_output_tokens"}
                    if status == "incomplete" else None,
                    "instructions": req.get("instructions"),
                    "max_output_tokens": req.get("max_output_tokens"), "model": model,
                    "output": output, "parallel_tool_calls": True,
                    "previous_response_id": req.get("previous_response_id"),
                    "reasoning": {"effort": (req.get("reasoning") or {}).get("effort"),
                                  "summary": None},
                    "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}},
                    "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
                    "usage": usage if with_usage else None, "user": None, "metadata": {}}

        final_output = ([reasoning_item(True)] if plan.r else []) + \
            [message_item("incomplete" if plan.length else "completed", plan.content())]

        if not req.get("stream"):
            if not plan.keepalive:
                time.sleep(plan.ttft)
            return self._send_json(200, response(status_final, final_output, True),
                                   extra=hdrs, plan=plan)

        st = self._begin_stream("text/event-stream", hdrs)
        seq = itertools.count()

        def ev(etype, **fields):
            obj = {"type": etype, "sequence_number": next(seq)}
            obj.update(fields)
            st.send(b"event: " + etype.encode() + b"\ndata: " + _dumps(obj) + b"\n\n")

        ev("response.created", response=response("in_progress", [], False))
        ev("response.in_progress", response=response("in_progress", [], False))

        def close_reasoning():
            text = plan.reasoning()
            ev("response.reasoning_summary_text.done", item_id=rs_id, output_index=0,
               summary_index=0, text=text)
            ev("response.reasoning_summary_part.done", item_id=rs_id, output_index=0,
               summary_index=0, part={"type": "summary_text", "text": text})
            ev("response.output_item.done", output_index=0, item=reasoning_item(True))

        def open_message():
            ev("response.output_item.added", output_index=m_index,
               item=message_item("in_progress"))
            ev("response.content_part.added", item_id=msg_id, output_index=m_index,
               content_index=0, part={"type": "output_text", "annotations": [],
                                      "logprobs": [], "text": ""})

        msg_open = False
        for kind, i in plan.slots(ping=st.keepalive):
            if kind == "r":
                if i == 0:
                    ev("response.output_item.added", output_index=0, item=reasoning_item(False))
                    ev("response.reasoning_summary_part.added", item_id=rs_id, output_index=0,
                       summary_index=0, part={"type": "summary_text", "text": ""})
                ev("response.reasoning_summary_text.delta", item_id=rs_id, output_index=0,
                   summary_index=0, delta=THINK[i % len(THINK)])
                continue
            if kind == "cut":
                if plan.cut == "error":
                    ev("error", code="server_error",
                       message="The server had an error while processing your request. "
                               "Sorry about that!", param=None)
                return st.end()
            if not msg_open:
                if plan.r:
                    close_reasoning()
                open_message()
                msg_open = True
            ev("response.output_text.delta", item_id=msg_id, output_index=m_index,
               content_index=0, delta=TOK[i % len(TOK)], logprobs=[])
        if not msg_open:
            if plan.r:
                close_reasoning()
            open_message()
        text = plan.content()
        ev("response.output_text.done", item_id=msg_id, output_index=m_index, content_index=0,
           text=text, logprobs=[])
        ev("response.content_part.done", item_id=msg_id, output_index=m_index, content_index=0,
           part={"type": "output_text", "annotations": [], "logprobs": [], "text": text})
        ev("response.output_item.done", output_index=m_index, item=final_output[-1])
        ev("response." + status_final, response=response(status_final, final_output, True))
        st.end()

    # ---- Anthropic Messages ---------------------------------------------

    def _anthropic(self, req):
        plan = _Plan(self)
        rid = COUNTERS.next_id()
        mid = f"msg_{rid:024d}"
        model = str(req.get("model") or "unknown") + "-0001"
        p = _words(req.get("system") or "") + _words(req.get("messages") or []) + 3
        out = plan.r + plan.n
        hdrs = {"request-id": f"req_{rid}", "x-request-id": f"req-{rid}"}
        plan.want_tools(req, lambda t: t.get("name"), "get_weather")
        stop = "max_tokens" if plan.length else ("tool_use" if plan.tool else "end_turn")
        signature = base64.b64encode(f"sig-{rid}".encode()).decode()
        tool_name = plan.tool_names[0] if plan.tool else "get_weather"
        tool_id = f"toolu_{rid:024d}"
        more_calls = [(f"toolu_{rid}_{k}", n) for k, n in enumerate(plan.tool_names)][1:]

        def usage(output_tokens):
            return {"input_tokens": p, "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0, "output_tokens": output_tokens}

        if not req.get("stream"):
            content = []
            if plan.r:
                content.append({"type": "thinking", "thinking": plan.reasoning(),
                                "signature": signature})
            if plan.tool:
                content.append({"type": "tool_use", "id": tool_id, "name": tool_name,
                                "input": {"q": plan.content()}})
                for k_id, k_name in more_calls:
                    content.append({"type": "tool_use", "id": k_id, "name": k_name,
                                    "input": {"q": "more"}})
            else:
                content.append({"type": "text", "text": plan.content()})
            time.sleep(plan.ttft)
            return self._send_json(200, {
                "id": mid, "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop, "stop_sequence": None,
                "usage": usage(out)}, extra=hdrs)

        st = self._begin_stream("text/event-stream", hdrs)

        def ev(etype, obj):
            st.send(b"event: " + etype.encode() + b"\ndata: " + _dumps(obj) + b"\n\n")

        ev("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage(1)}})
        index = -1
        open_kind = None  # "r" | "c"
        pinged = False

        def start_block(kind):
            nonlocal index, open_kind, pinged
            if open_kind is not None:
                if open_kind == "r":
                    ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                               "delta": {"type": "signature_delta",
                                                         "signature": signature}})
                ev("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
            open_kind = kind
            if kind == "r":
                block = {"type": "thinking", "thinking": "", "signature": ""}
            elif plan.tool:
                block = {"type": "tool_use", "id": tool_id, "name": tool_name, "input": {}}
            else:
                block = {"type": "text", "text": ""}
            ev("content_block_start", {"type": "content_block_start", "index": index,
                                       "content_block": block})
            if not pinged:
                pinged = True
                ev("ping", {"type": "ping"})

        for kind, i in plan.slots():
            if kind == "cut":
                if plan.cut == "error":
                    ev("error", {"type": "error", "error": {"type": "overloaded_error",
                                                            "message": "Overloaded"}})
                return st.end()
            if kind != open_kind:
                start_block(kind)
            if kind == "r":
                delta = {"type": "thinking_delta", "thinking": THINK[i % len(THINK)]}
            elif plan.tool:
                delta = {"type": "input_json_delta", "partial_json": plan.tool_piece(i)}
            else:
                delta = {"type": "text_delta", "text": TOK[i % len(TOK)]}
            ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                       "delta": delta})
        if open_kind != "c":
            start_block("c")  # no content chunks: still one (empty) text block
        ev("content_block_stop", {"type": "content_block_stop", "index": index})
        for k_id, k_name in more_calls:
            index += 1
            ev("content_block_start", {"type": "content_block_start", "index": index,
                                       "content_block": {"type": "tool_use", "id": k_id,
                                                         "name": k_name, "input": {}}})
            ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                       "delta": {"type": "input_json_delta",
                                                 "partial_json": '{"q":"more"}'}})
            ev("content_block_stop", {"type": "content_block_stop", "index": index})
        ev("message_delta", {"type": "message_delta",
                             "delta": {"stop_reason": stop, "stop_sequence": None},
                             "usage": usage(out)})
        ev("message_stop", {"type": "message_stop"})
        st.end()

    # ---- Gemini ---------------------------------------------------------

    def _gemini(self, req, model_in, method):
        plan = _Plan(self)
        rid = COUNTERS.next_id()
        model_version = model_in + "-001"
        response_id = f"gemresp{rid:08d}"
        si = req.get("systemInstruction") or req.get("system_instruction") or {}
        p = _words(req.get("contents") or []) + _words(si) + 3
        finish = "MAX_TOKENS" if plan.length else "STOP"
        hdrs = {"x-request-id": f"req-{rid}"}

        def usage_full():
            u = {"promptTokenCount": p, "candidatesTokenCount": plan.n,
                 "totalTokenCount": p + plan.n + plan.r}
            if plan.r:
                u["thoughtsTokenCount"] = plan.r
            return u

        def obj(parts, final):
            cand = {"content": {"role": "model", "parts": parts}}
            if final:
                cand["finishReason"] = finish
            cand["index"] = 0
            return {"candidates": [cand],
                    "usageMetadata": usage_full() if final
                    else {"promptTokenCount": p, "totalTokenCount": p},
                    "modelVersion": model_version, "responseId": response_id}

        if method == "generateContent":
            parts = ([{"text": plan.reasoning(), "thought": True}] if plan.r else []) + \
                [{"text": plan.content()}]
            time.sleep(plan.ttft)
            return self._send_json(200, obj(parts, True), extra=hdrs)

        sse = (self.query.get("alt") or [""])[0] == "sse"
        st = self._begin_stream("text/event-stream" if sse else "application/json", hdrs)
        nsent = 0

        def send(o):
            nonlocal nsent
            if sse:
                st.send(b"data: " + _dumps(o) + b"\r\n\r\n")
            else:
                st.send((b"[" if nsent == 0 else b",\r\n") + _dumps(o))
            nsent += 1

        last_c = plan.n - 1
        for kind, i in plan.slots():
            if kind == "cut":
                if plan.cut == "error":
                    send({"error": {"code": 503,
                                    "message": "The model is overloaded. Please try again later.",
                                    "status": "UNAVAILABLE"}})
                    if not sse:
                        st.send(b"]")
                return st.end()
            if kind == "r":
                send(obj([{"text": THINK[i % len(THINK)], "thought": True}], False))
            else:
                send(obj([{"text": TOK[i % len(TOK)]}], i == last_c))
        if plan.n == 0:
            send(obj([{"text": ""}], True))
        if not sse:
            st.send(b"]")
        st.end()

    # ---- Ollama ---------------------------------------------------------

    def _ollama(self, req, chat):
        plan = _Plan(self)
        COUNTERS.next_id()
        model = str(req.get("model") or "unknown") + "-0001"
        if chat:
            p = _words(req.get("messages") or []) + 3
        else:
            p = _words(req.get("prompt") or "") + _words(req.get("system") or "") + 3
        done_reason = "length" if plan.length else "stop"

        def line(content, thinking, done):
            o = {"model": model, "created_at": _now_rfc3339()}
            if chat:
                msg = {"role": "assistant", "content": content}
                if thinking:
                    msg["thinking"] = thinking
                o["message"] = msg
                if done:
                    o["done_reason"] = done_reason
                o["done"] = done
            else:
                o["response"] = content
                if thinking:
                    o["thinking"] = thinking
                o["done"] = done
                if done:
                    o["done_reason"] = done_reason
            if done:
                now = time.monotonic()
                first = plan.t_first if plan.t_first is not None else now
                o.update({"total_duration": int((now - plan.t0) * 1e9),
                          "load_duration": 1000000,
                          "prompt_eval_count": p,
                          "prompt_eval_duration": int((first - plan.t0) * 1e9),
                          "eval_count": plan.r + plan.n,
                          "eval_duration": int((now - first) * 1e9)})
            return o

        if req.get("stream", True) is False:
            time.sleep(plan.ttft)
            plan.t_first = time.monotonic()
            return self._send_json(200, line(plan.content(), plan.reasoning(), True))

        st = self._begin_stream("application/x-ndjson")
        for kind, i in plan.slots():
            if kind == "cut":
                if plan.cut == "error":
                    st.send(_dumps({"error": "an error was encountered while running the "
                                             "model: unexpected EOF"}) + b"\n")
                return st.end()
            if kind == "r":
                st.send(_dumps(line("", THINK[i % len(THINK)], False)) + b"\n")
            else:
                st.send(_dumps(line(TOK[i % len(TOK)], "", False)) + b"\n")
        st.send(_dumps(line("", "", True)) + b"\n")
        st.end()

    # ---- DashScope native -----------------------------------------------

    def _dashscope(self, req):
        plan = _Plan(self)
        rid = COUNTERS.next_id()
        request_id = f"00000000-0000-4000-8000-{rid:012d}"
        model = str(req.get("model") or "unknown") + "-0001"
        inp = req.get("input") or {}
        p = _words(inp.get("messages") or []) + _words(inp.get("prompt") or "") + 3 \
            if isinstance(inp, dict) else 3
        params = req.get("parameters") or {}
        incremental = params.get("incremental_output") is True
        message_fmt = params.get("result_format") == "message"
        finish = "length" if plan.length else "stop"
        stream = (self.headers.get("X-DashScope-SSE") or "").strip().lower() == "enable"
        hdrs = {"x-request-id": f"req-{rid}"}

        def body(content, reasoning, fin, n_r, n_c):
            if message_fmt:
                msg = {"content": content}
                if plan.r:
                    msg["reasoning_content"] = reasoning
                msg["role"] = "assistant"
                output = {"choices": [{"message": msg, "finish_reason": fin}]}
            else:
                output = {"finish_reason": fin, "text": content}
            u = {"total_tokens": p + n_r + n_c, "output_tokens": n_r + n_c, "input_tokens": p}
            if plan.r:
                u["output_tokens_details"] = {"reasoning_tokens": n_r}
            return {"output": output, "usage": u, "request_id": request_id}

        if not stream:
            time.sleep(plan.ttft)
            return self._send_json(200, body(plan.content(), plan.reasoning(), finish,
                                             plan.r, plan.n), extra=hdrs)

        st = self._begin_stream("text/event-stream", dict(hdrs, **{"X-DashScope-Model": model}))
        eid = itertools.count(1)

        def send(o, event="result", status=200):
            st.send(b"id:%d\nevent:%s\n:HTTP_STATUS/%d\ndata:%s\n\n"
                    % (next(eid), event.encode(), status, _dumps(o)))

        n_r = n_c = 0
        for kind, i in plan.slots():
            if kind == "cut":
                if plan.cut == "error":
                    send({"code": "InternalError", "message": "Internal server error!",
                          "request_id": request_id}, event="error", status=500)
                return st.end()
            if kind == "r":
                n_r += 1
                r_text = THINK[i % len(THINK)] if incremental else plan.reasoning(n_r)
                c_text = "" if incremental else plan.content(0)
            else:
                n_c += 1
                c_text = TOK[i % len(TOK)] if incremental else plan.content(n_c)
                r_text = "" if incremental else plan.reasoning()
            send(body(c_text, r_text, "null", n_r, n_c))
        if incremental:
            send(body("", "", finish, n_r, n_c))
        else:
            send(body(plan.content(), plan.reasoning(), finish, n_r, n_c))
        st.end()


    # ---- Dify service API -----------------------------------------------

    def _dify(self, req, app):
        """`app`: "chat", "completion" or "workflow"."""
        plan = _Plan(self)
        rid = COUNTERS.next_id()
        task_id = f"task-{rid}"
        message_id = f"00000000-0000-4000-9000-{rid:012d}"
        run_id = f"00000000-0000-4000-a000-{rid:012d}"
        conv = str(req.get("conversation_id") or "") or f"00000000-0000-4000-b000-{rid:012d}"
        inputs = req.get("inputs") if isinstance(req.get("inputs"), dict) else {}
        p = _words(req.get("query") or "") + sum(_words(v) for v in inputs.values()) + 3
        try:
            err_after = int(inputs.get("x_test_stream_error_after"))
            plan.cut, plan.cut_after = "error", max(0, min(err_after, plan.n))
        except (TypeError, ValueError):
            pass
        created = int(time.time())

        def usage(n):
            pp, cp = p * 0.001 / 1000, n * 0.002 / 1000
            return {"prompt_tokens": p, "prompt_unit_price": "0.001", "prompt_price_unit": "0.001",
                    "prompt_price": f"{pp:.7f}", "completion_tokens": n,
                    "completion_unit_price": "0.002", "completion_price_unit": "0.001",
                    "completion_price": f"{cp:.7f}", "total_tokens": p + n,
                    "total_price": f"{pp + cp:.7f}", "currency": "USD",
                    "latency": round(time.monotonic() - plan.t0, 6)}

        def with_conv(o):
            if app == "chat":
                o["conversation_id"] = conv
            return o

        if app == "workflow":
            return self._dify_workflow(req, plan, task_id, run_id, created, p)
        if req.get("response_mode") != "streaming":
            time.sleep(plan.ttft)
            return self._send_json(200, with_conv({
                "event": "message", "task_id": task_id, "id": message_id,
                "message_id": message_id, "mode": "chat" if app == "chat" else "completion",
                "answer": plan.content(), "metadata": {"usage": usage(plan.n)},
                "created_at": created}))

        st = self._begin_stream("text/event-stream")
        st.send(b"event: ping\n\n")

        def ev(o):
            st.send(b"data: " + _dumps(o) + b"\n\n")

        n = 0
        for kind, i in plan.slots():
            if kind == "cut":
                ev({"event": "error", "task_id": task_id, "message_id": message_id,
                    "status": 500, "code": "completion_request_error",
                    "message": "[test] model failed"})
                return st.end()
            if kind == "r":
                ev(with_conv({"event": "agent_thought", "id": f"th-{rid}", "task_id": task_id,
                              "message_id": message_id, "position": i + 1,
                              "thought": THINK[i % len(THINK)], "observation": "", "tool": "",
                              "tool_input": "", "created_at": created, "message_files": []}))
                continue
            n += 1
            ev(with_conv({"event": "message", "task_id": task_id, "id": message_id,
                          "message_id": message_id, "answer": TOK[i % len(TOK)],
                          "created_at": created}))
        ev(with_conv({"event": "message_end", "task_id": task_id, "id": message_id,
                      "message_id": message_id,
                      "metadata": {"usage": usage(n), "retriever_resources": []}}))
        st.end()

    def _dify_workflow(self, req, plan, task_id, run_id, created, p):
        """A start -> llm -> end workflow: the llm node takes the plan's time."""
        t_start = time.monotonic()

        def data(status, elapsed):
            return {"id": run_id, "workflow_id": "wf-test", "status": status,
                    "outputs": {"answer": plan.content()}, "error": None,
                    "elapsed_time": elapsed, "total_tokens": p + plan.n, "total_steps": 3,
                    "created_at": created, "finished_at": int(time.time())}

        if req.get("response_mode") != "streaming":
            time.sleep(plan.ttft)
            return self._send_json(200, {"workflow_run_id": run_id, "task_id": task_id,
                                         "data": data("succeeded",
                                                      round(time.monotonic() - t_start, 6))})
        st = self._begin_stream("text/event-stream")
        st.send(b"event: ping\n\n")

        def ev(event, d):
            st.send(b"data: " + _dumps({"event": event, "task_id": task_id,
                                        "workflow_run_id": run_id, "data": d}) + b"\n\n")

        ev("workflow_started", {"id": run_id, "workflow_id": "wf-test", "sequence_number": 1,
                                "inputs": req.get("inputs") or {}, "created_at": created})

        def node(idx, ntype, title, work):
            nid = f"{run_id}-node-{idx}"
            ev("node_started", {"id": nid, "node_id": f"n{idx}", "node_type": ntype,
                                "title": title, "index": idx, "created_at": created})
            t = time.monotonic()
            status = "succeeded" if work() is not False else "failed"
            ev("node_finished", {"id": nid, "node_id": f"n{idx}", "node_type": ntype,
                                 "title": title, "index": idx, "status": status,
                                 "elapsed_time": round(time.monotonic() - t, 6),
                                 "execution_metadata": {"total_tokens": 0},
                                 "created_at": created})
            return status

        def llm():
            for kind, i in plan.slots():
                if kind == "cut":
                    return False
                if kind == "c":
                    ev("text_chunk", {"text": TOK[i % len(TOK)],
                                      "from_variable_selector": ["n2", "text"]})
            return True

        node(1, "start", "Start (app text)", lambda: time.sleep(0.02))
        status = node(2, "llm", "LLM (app text)", llm)
        if status == "failed":
            st.send(b"data: " + _dumps({"event": "error", "task_id": task_id,
                                        "status": 500, "code": "workflow_failed",
                                        "message": "[test] llm node failed"}) + b"\n\n")
            return st.end()
        node(3, "end", "End (app text)", lambda: time.sleep(0.01))
        ev("workflow_finished", data("succeeded", round(time.monotonic() - t_start, 6)))
        st.end()


_DIFY_PATHS = {"/v1/chat-messages": "chat", "/v1/completion-messages": "completion",
               "/v1/workflows/run": "workflow"}


class _Out:
    """Chunked (optionally compressed) body writer: one HTTP chunk per send()."""

    def __init__(self, handler, enc):
        self._h = handler
        self._enc = enc

    def send(self, data):
        if self._enc is not None:
            data = self._enc.chunk(data)
        self._h._write_chunk(data)

    def keepalive(self):
        self.send(b": keep-alive\n\n")

    def end(self):
        if self._enc is not None:
            tail = self._enc.end()
            if tail:
                self._h._write_chunk(tail)
        self._h.wfile.write(b"0\r\n\r\n")
        self._h.wfile.flush()


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
