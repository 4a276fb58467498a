#!/usr/bin/env python3
"""OpenAI-compatible inference server on a real Python ASGI stack (FastAPI + uvicorn), standing
in for vLLM / SGLang in llmprobe's server-side e2e tests. Plain HTTP on uvicorn; HTTP/2 on
hypercorn (--hypercorn): h2c with prior knowledge in plaintext, ALPN h2 with --tls-cert/--tls-key.

    python asgi_server.py [--host 127.0.0.1] [--port 0] [--ttft-ms 200] [--gap-ms 50]
                          [--chunks 8] [--log] [--hypercorn [--tls-cert C --tls-key K]]

Needs `fastapi` and `uvicorn`, and `hypercorn` for --hypercorn (see requirements.txt). The listening socket is bound by this
script before uvicorn starts (so --port 0 gets a free port with no race) and handed to uvicorn;
once uvicorn has started, exactly one line "LISTENING <port>" is printed on stdout (flushed).
Nothing else goes to stdout; uvicorn logs warnings only, to stderr (--log: its access log too).

Endpoints (same bytes as llm_server.py's OpenAI chat, minus the extra dialects):
  POST /v1/chat/completions, /chat/completions   stream (+ stream_options.include_usage) and
                                                 non-stream
  GET  /health                                   200 "ok"
  GET  /v1/models                                {"object":"list","data":[...]}
Per-request headers: x-test-ttft-ms, x-test-gap-ms, x-test-chunks, x-test-status,
x-test-reasoning-chunks (delta.reasoning_content chunks before the content).
Token accounting as llm_server.py: prompt_tokens = 3 + words of all message content,
completion_tokens = reasoning chunks + chunks, model = request model + "-0001".
Streams are a StreamingResponse over an async generator (asyncio.sleep between chunks); each
SSE event is one yielded bytes object, i.e. one HTTP chunk written by uvicorn (h11).
"""

import argparse
import asyncio
import itertools
import json
import socket
import sys
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse


# Chunk texts: each is exactly one token in OpenAI's o200k_base and cl100k_base vocabularies, like
# the single-token deltas real servers stream, so token estimates can be checked exactly.
TOK = [" Hello", " there", " from", " the", " test", " server", " and", " its", " small", " model"]
THINK = [" Let", " me", " think", " about", " this", " first"]

CFG = argparse.Namespace(ttft_ms=200, gap_ms=50, chunks=8)
IDS = itertools.count(1)
app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def _int(request, name, default):
    try:
        return int(request.headers.get(name, default))
    except ValueError:
        return default


def _words(v):
    if isinstance(v, str):
        return len(v.split())
    if isinstance(v, list):
        return sum(_words(x) for x in v)
    if isinstance(v, dict):
        return sum(_words(v[k]) for k in ("content", "text") if k in v)
    return 0


@app.get("/health")
async def health():
    return PlainTextResponse("ok")


@app.get("/v1/models")
async def models():
    return Response(_dumps({"object": "list", "data": [
        {"id": "test-model", "object": "model", "created": 0, "owned_by": "llmprobe"}]}),
        media_type="application/json")


@app.post("/v1/chat/completions")
@app.post("/chat/completions")
async def chat(request: Request):
    status = _int(request, "x-test-status", 0)
    if status and status != 200:
        etype = "server_error" if status >= 500 else \
            "rate_limit_error" if status == 429 else "invalid_request_error"
        return Response(_dumps({"error": {"message": f"forced status {status}", "type": etype,
                                          "code": str(status)}}), status_code=status,
                        media_type="application/json",
                        headers={"retry-after": "1"} if status in (429, 503) else None)
    try:
        req = json.loads(await request.body() or b"{}")
        if not isinstance(req, dict):
            raise ValueError("body is not a JSON object")
    except ValueError as e:
        return Response(_dumps({"error": {"message": f"invalid JSON body: {e}",
                                          "type": "invalid_request_error",
                                          "code": "invalid_json"}}),
                        status_code=400, media_type="application/json")

    ttft = max(0, _int(request, "x-test-ttft-ms", CFG.ttft_ms)) / 1000.0
    gap = max(0, _int(request, "x-test-gap-ms", CFG.gap_ms)) / 1000.0
    n = max(0, _int(request, "x-test-chunks", CFG.chunks))
    r = max(0, _int(request, "x-test-reasoning-chunks", 0))
    rid = next(IDS)
    cid = f"chatcmpl-{rid}"
    model = str(req.get("model") or "unknown") + "-0001"
    created = int(time.time())
    p = _words(req.get("messages") or []) + 3
    usage = {"prompt_tokens": p, "completion_tokens": r + n, "total_tokens": p + r + n,
             "prompt_tokens_details": {"cached_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": r}}
    hdrs = {"x-request-id": f"req-{rid}"}

    if not req.get("stream"):
        await asyncio.sleep(ttft)
        message = {"role": "assistant", "content": "".join(TOK[i % len(TOK)] for i in range(n))}
        if r:
            message["reasoning_content"] = "".join(THINK[i % len(THINK)] for i in range(r))
        return Response(_dumps({
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage}), media_type="application/json", headers=hdrs)

    so = req.get("stream_options")
    include_usage = isinstance(so, dict) and so.get("include_usage") is True

    def event(choices, with_usage=None):
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
               "model": model, "choices": choices}
        if include_usage:
            obj["usage"] = with_usage
        return b"data: " + _dumps(obj) + b"\n\n"

    async def gen():
        await asyncio.sleep(ttft)
        for k in range(r + n):
            if k > 0:
                await asyncio.sleep(gap)
            if k < r:
                delta = {"role": "assistant", "content": None} if k == 0 else {"content": None}
                delta["reasoning_content"] = f"think{k} "
            else:
                i = k - r
                delta = {"role": "assistant", "content": TOK[i % len(TOK)]} if k == 0 \
                    else {"content": TOK[i % len(TOK)]}
            yield event([{"index": 0, "delta": delta, "finish_reason": None}])
        yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if include_usage:
            yield event([], usage)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers=dict(hdrs, **{"Cache-Control": "no-cache"}))


class _Server(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if not self.should_exit:
            port = sockets[0].getsockname()[1]
            print(f"LISTENING {port}", flush=True)


def _hypercorn(sock, a):
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.loglevel = "INFO" if a.log else "WARNING"
    config.keep_alive_timeout = 120
    if a.tls_cert:
        config.certfile, config.keyfile = a.tls_cert, a.tls_key
        config.alpn_protocols = ["h2", "http/1.1"]

    async def run():
        # The socket listens already: the port is good before hypercorn accepts.
        print(f"LISTENING {sock.getsockname()[1]}", flush=True)
        await serve(app, config, mode="asgi")

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ttft-ms", type=int, default=200)
    ap.add_argument("--gap-ms", type=int, default=50)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--log", action="store_true", help="uvicorn access log on stderr")
    ap.add_argument("--hypercorn", action="store_true",
                    help="serve with hypercorn (HTTP/1.1 and HTTP/2: h2c prior knowledge, ALPN h2)")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    a = ap.parse_args()
    CFG.ttft_ms, CFG.gap_ms, CFG.chunks = a.ttft_ms, a.gap_ms, a.chunks

    sock = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((a.host, a.port))
    sock.listen(128)
    sock.set_inheritable(True)
    if a.hypercorn:
        return _hypercorn(sock, a)
    config = uvicorn.Config(app, log_level="info" if a.log else "warning",
                            access_log=a.log, http="h11", loop="asyncio", lifespan="off",
                            timeout_keep_alive=120)
    try:
        _Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
