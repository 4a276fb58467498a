#!/usr/bin/env python3
"""Generic httpx client for llmprobe's e2e tests (any dialect, raw HTTP).

    python http_client.py --url URL [--ca cert.pem]
        (--json BODY | --dialect chat|completions|embeddings|responses|anthropic|gemini|ollama|ollama-generate|dashscope)
        [--model test-model] [--stream] [--prompt TEXT] [--header K=V ...]
        [--calls N] [--timeout 60] [--http2]

--json BODY    POST BODY (a JSON string, sent as is) to URL, which is the full endpoint.
--dialect D    builds the request of that API; URL is then the server's base
               (scheme://host:port) and the dialect's path is appended:
                 chat            /v1/chat/completions  (stream_options.include_usage)
                 completions     /v1/completions       (stream_options.include_usage)
                 embeddings      /v1/embeddings        (encoding_format base64; --stream ignored)
                 responses       /v1/responses
                 anthropic       /v1/messages          (x-api-key, anthropic-version)
                 gemini          /v1beta/models/MODEL:streamGenerateContent?alt=sse with
                                 --stream, else :generateContent (x-goog-api-key)
                 gemini-array    /v1beta/models/MODEL:streamGenerateContent (JSON array)
                 ollama          /api/chat      ("stream": true|false)
                 ollama-generate /api/generate
                 dashscope       /api/v1/services/aigc/text-generation/generation,
                                 result_format "message", incremental_output true;
                                 --stream adds "X-DashScope-SSE: enable"
               If URL already has a path other than "/", it is used as is.
API key: env OPENAI_API_KEY (default "sk-test-secret-do-not-leak") as the dialect's auth header.

The body is read incrementally (iter_raw) to its end; httpx decodes gzip/deflate (and br/zstd
when brotli/zstandard are installed) itself and only identity or those are accepted.

Prints exactly ONE JSON line on stdout:
    {"pid": PID, "calls": [{"status": 200, "content_type": "...", "content_encoding": ...|null,
        "reads": n_raw_reads, "bytes": decoded_bytes, "events": n_frames,
        "content": "tok0 tok1 ...", "reasoning": "think0 ...", "usage": {...}|null,
        "error": {...}|null, "request_id": ...|null, "first_byte_ms": f|null,
        "ttft_ms": f|null, "duration_ms": f, "body": "decoded text (first 64 KiB)"}]}
"frames" are SSE events (blank-line separated), NDJSON lines, or array elements;
"content"/"reasoning"/"usage"/"error" are extracted per dialect (for --json, by guessing
the dialect from the URL path). ttft_ms = time to the first frame with non-empty content or
reasoning. Exit status 1 on transport errors; HTTP error statuses are recorded, not raised.
"""

import argparse
import json
import os
import re
import ssl
import sys
import time
import urllib.parse

import httpx

DEFAULT_KEY = "sk-test-secret-do-not-leak"

PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "responses": "/v1/responses",
    "anthropic": "/v1/messages",
    "ollama": "/api/chat",
    "ollama-generate": "/api/generate",
    "dashscope": "/api/v1/services/aigc/text-generation/generation",
}


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--ca")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--json", dest="body")
    g.add_argument("--dialect", choices=sorted(list(PATHS) + ["gemini", "gemini-array"]))
    ap.add_argument("--model", default="test-model")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--prompt", default="Say hello to the test server")
    ap.add_argument("--header", action="append", default=[], metavar="K=V")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--http2", action="store_true", help="offer h2 via ALPN (needs h2)")
    a = ap.parse_args()
    a.headers = {}
    for h in a.header:
        k, sep, v = h.partition("=")
        if not sep or not k:
            ap.error(f"--header expects K=V, got {h!r}")
        a.headers[k.strip()] = v
    return a


def build(a):
    """-> (url, headers, body bytes, dialect)"""
    key = os.environ.get("OPENAI_API_KEY", DEFAULT_KEY)
    headers = {"content-type": "application/json"}
    if a.body is not None:
        path = urllib.parse.urlsplit(a.url).path
        headers["authorization"] = f"Bearer {key}"
        headers.update(a.headers)
        return a.url, headers, a.body.encode(), guess_dialect(path)
    d, m, msgs = a.dialect, a.model, [{"role": "user", "content": a.prompt}]
    if d == "chat":
        body = {"model": m, "messages": msgs, "stream": a.stream}
        if a.stream:
            body["stream_options"] = {"include_usage": True}
    elif d == "completions":
        body = {"model": m, "prompt": a.prompt, "stream": a.stream}
        if a.stream:
            body["stream_options"] = {"include_usage": True}
    elif d == "embeddings":
        body = {"model": m, "input": a.prompt, "encoding_format": "base64"}
    elif d == "responses":
        body = {"model": m, "input": a.prompt, "stream": a.stream}
    elif d == "anthropic":
        body = {"model": m, "max_tokens": 1024, "messages": msgs, "stream": a.stream}
    elif d in ("gemini", "gemini-array"):
        body = {"contents": [{"role": "user", "parts": [{"text": a.prompt}]}]}
    elif d == "ollama":
        body = {"model": m, "messages": msgs, "stream": a.stream}
    elif d == "ollama-generate":
        body = {"model": m, "prompt": a.prompt, "stream": a.stream}
    else:  # dashscope
        body = {"model": m, "input": {"messages": msgs},
                "parameters": {"result_format": "message", "incremental_output": True}}
    if d == "gemini":
        path = f"/v1beta/models/{m}:" + ("streamGenerateContent?alt=sse" if a.stream
                                         else "generateContent")
    elif d == "gemini-array":
        path = f"/v1beta/models/{m}:streamGenerateContent"
    else:
        path = PATHS[d]
    if d == "anthropic":
        headers.update({"x-api-key": key, "anthropic-version": "2023-06-01"})
    elif d.startswith("gemini"):
        headers["x-goog-api-key"] = key
    else:
        headers["authorization"] = f"Bearer {key}"
    if d == "dashscope" and a.stream:
        headers["X-DashScope-SSE"] = "enable"
        headers["accept"] = "text/event-stream"
    headers.update(a.headers)
    u = urllib.parse.urlsplit(a.url)
    url = a.url if u.path not in ("", "/") else a.url.rstrip("/") + path
    return url, headers, json.dumps(body).encode(), d


def guess_dialect(path):
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/completions"):
        return "completions"
    if path.endswith("/embeddings"):
        return "embeddings"
    if path.endswith("/responses"):
        return "responses"
    if path.endswith("/messages"):
        return "anthropic"
    if ":streamGenerateContent" in path or ":generateContent" in path:
        return "gemini"
    if path == "/api/chat":
        return "ollama"
    if path == "/api/generate":
        return "ollama-generate"
    if path.endswith("/generation"):
        return "dashscope"
    return None


class Frames:
    """Splits the decoded body into frames incrementally: SSE events, NDJSON lines or the
    elements of a streamed JSON array."""

    def __init__(self, ctype):
        self.kind = "sse" if "event-stream" in ctype else \
            "ndjson" if "ndjson" in ctype else "json"
        self.buf = ""

    def feed(self, text):
        self.buf += text
        out = []
        if self.kind == "sse":
            self.buf = self.buf.replace("\r\n", "\n")
            while "\n\n" in self.buf:
                ev, self.buf = self.buf.split("\n\n", 1)
                out.append(self._sse(ev))
        elif self.kind == "ndjson":
            while "\n" in self.buf:
                line, self.buf = self.buf.split("\n", 1)
                if line.strip():
                    out.append((None, line))
        else:  # one JSON value, or the elements of a (streamed) top-level array
            dec = json.JSONDecoder()
            while True:
                rest = self.buf.lstrip(" \t\r\n,[]")
                if not rest:
                    self.buf = ""
                    break
                try:
                    obj, end = dec.raw_decode(rest)
                except ValueError:
                    self.buf = rest
                    break
                out.append((None, json.dumps(obj)))
                self.buf = rest[end:]
        return [f for f in out if f is not None]

    @staticmethod
    def _sse(ev):
        name, data = None, []
        for line in ev.split("\n"):
            if line.startswith(":") or not line:
                continue
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "event":
                name = v
            elif k == "data":
                data.append(v)
        if not data:
            return None
        return (name, "\n".join(data))

    def finish(self):
        if self.kind == "json":
            return self.feed("")
        return self.feed("\n\n" if self.kind == "sse" else "\n")


def extract(d, name, obj, res):
    """Per-dialect: appends content/reasoning, keeps usage/error."""
    c = r = ""
    if not isinstance(obj, dict):
        return False
    if obj.get("error") or name == "error" or obj.get("type") == "error" or \
            (d == "dashscope" and obj.get("code")):
        res["error"] = obj
    if d in ("chat", "completions"):
        for ch in obj.get("choices") or []:
            if "delta" in ch:
                delta = ch.get("delta") or {}
                c += delta.get("content") or ""
                r += delta.get("reasoning_content") or delta.get("reasoning") or ""
                for tc in delta.get("tool_calls") or []:
                    c += (tc.get("function") or {}).get("arguments") or ""
            elif "message" in ch:
                msg = ch.get("message") or {}
                c += msg.get("content") or ""
                r += msg.get("reasoning_content") or msg.get("reasoning") or ""
            else:
                c += ch.get("text") or ""
        if obj.get("usage"):
            res["usage"] = obj["usage"]
    elif d == "embeddings":
        if obj.get("usage"):
            res["usage"] = obj["usage"]
    elif d == "responses":
        t = obj.get("type")
        if t == "response.output_text.delta":
            c = obj.get("delta") or ""
        elif t == "response.reasoning_summary_text.delta":
            r = obj.get("delta") or ""
        elif t in ("response.completed", "response.incomplete", "response.failed"):
            res["usage"] = obj["response"].get("usage")
        elif obj.get("object") == "response":  # non-stream
            res["usage"] = obj.get("usage")
            for item in obj.get("output") or []:
                for part in item.get("content") or []:
                    c += part.get("text") or ""
                for part in item.get("summary") or []:
                    r += part.get("text") or ""
    elif d == "anthropic":
        t = obj.get("type")
        if t == "content_block_delta":
            dl = obj.get("delta") or {}
            c = dl.get("text") or dl.get("partial_json") or ""
            r = dl.get("thinking") or ""
        elif t == "message_start":
            res["usage"] = dict(obj["message"].get("usage") or {})
        elif t == "message_delta":
            res["usage"] = dict(res["usage"] or {}, **(obj.get("usage") or {}))
        elif t == "message":
            res["usage"] = obj.get("usage")
            for b in obj.get("content") or []:
                c += b.get("text") or ""
                r += b.get("thinking") or ""
    elif d and d.startswith("gemini"):
        for cand in obj.get("candidates") or []:
            for part in (cand.get("content") or {}).get("parts") or []:
                if part.get("thought"):
                    r += part.get("text") or ""
                else:
                    c += part.get("text") or ""
        if obj.get("usageMetadata"):
            res["usage"] = obj["usageMetadata"]
    elif d and d.startswith("ollama"):
        msg = obj.get("message") or {}
        c = msg.get("content") or obj.get("response") or ""
        r = msg.get("thinking") or obj.get("thinking") or ""
        if obj.get("done"):
            res["usage"] = {k: obj.get(k) for k in ("prompt_eval_count", "eval_count")}
    elif d == "dashscope":
        out = obj.get("output") or {}
        for ch in out.get("choices") or []:
            msg = ch.get("message") or {}
            c += msg.get("content") or ""
            r += msg.get("reasoning_content") or ""
        c += out.get("text") or ""
        if obj.get("usage"):
            res["usage"] = obj["usage"]
    res["content"] += c
    res["reasoning"] += r
    return bool(c or r)


def one_call(client, a):
    url, headers, body, d = build(a)
    res = {"status": None, "content_type": None, "content_encoding": None, "reads": 0,
           "bytes": 0, "events": 0, "content": "", "reasoning": "", "usage": None,
           "error": None, "request_id": None, "first_byte_ms": None, "ttft_ms": None,
           "duration_ms": None, "body": ""}
    t0 = time.monotonic()
    ms = lambda: round((time.monotonic() - t0) * 1000, 1)  # noqa: E731
    with client.stream("POST", url, headers=headers, content=body) as r:
        res["status"] = r.status_code
        res["content_type"] = r.headers.get("content-type")
        res["content_encoding"] = r.headers.get("content-encoding")
        res["request_id"] = r.headers.get("x-request-id") or r.headers.get("request-id")
        frames = Frames(res["content_type"] or "")
        decoder = r._get_content_decoder()  # what iter_bytes() uses: decodes per read
        text_parts = []

        def handle(fr):
            for name, data in fr:
                res["events"] += 1
                if data.strip() == "[DONE]":
                    continue
                try:
                    obj = json.loads(data)
                except ValueError:
                    continue
                if extract(d, name, obj, res) and res["ttft_ms"] is None:
                    res["ttft_ms"] = ms()

        for raw in r.iter_raw():
            res["reads"] += 1
            if res["first_byte_ms"] is None:
                res["first_byte_ms"] = ms()
            chunk = decoder.decode(raw)
            if not chunk:
                continue
            res["bytes"] += len(chunk)
            t = chunk.decode("utf-8", "replace")
            text_parts.append(t)
            handle(frames.feed(t))
        tail = decoder.flush()
        if tail:
            res["bytes"] += len(tail)
            t = tail.decode("utf-8", "replace")
            text_parts.append(t)
            handle(frames.feed(t))
        handle(frames.finish())
    res["duration_ms"] = ms()
    res["body"] = "".join(text_parts)[:65536]
    return res


def main():
    a = parse_args()
    verify = ssl.create_default_context(cafile=a.ca) if a.ca else True
    with httpx.Client(verify=verify, timeout=a.timeout, http2=a.http2) as client:
        calls = [one_call(client, a) for _ in range(max(1, a.calls))]
    print(json.dumps({"pid": os.getpid(), "calls": calls}, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        print(f"http_client.py: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
