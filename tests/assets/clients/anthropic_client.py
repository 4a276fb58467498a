#!/usr/bin/env python3
"""Real `anthropic` SDK client for llmprobe's e2e tests.

    python anthropic_client.py --base-url https://127.0.0.1:PORT [--ca cert.pem]
        [--model claude-test] [--stream] [--thinking N] [--tool] [--calls N]
        [--prompt TEXT] [--system TEXT] [--max-tokens 1024] [--header K=V ...]
        [--max-retries 0] [--timeout 60] [--allow-http-error] [--raw-stream]

--base-url has NO /v1 (the SDK appends /v1/messages).
API key: env ANTHROPIC_API_KEY (default "sk-ant-test-secret-do-not-leak"); sent as
`x-api-key`.

--thinking N   sends `thinking: {type: "enabled", budget_tokens: 1024}` (max_tokens is
               raised to 2048 if lower) and asks the test server for N reasoning chunks
               (request header x-test-reasoning-chunks: N).
--tool         sends one tool definition and `x-test-tool-call: 1` (the server answers with
               a tool_use block streamed as input_json_delta pieces).
--stream       uses the SDK's `messages.stream()` helper, which accumulates the final
               message from the events and so checks their order and shapes; with
               --raw-stream, `messages.create(stream=True)` (raw events only) instead.

Prints exactly ONE JSON line on stdout at the end:
    {"pid": PID, "calls": [{"chunks": n_text_or_tool_deltas, "thinking_chunks": n,
        "content": "...", "thinking": "...", "usage": {...}|null, "model": "...-0001"|null,
        "stop_reason": "end_turn"|..., "stream": bool, "status": 200,
        "request_id": "req_N"|null, "ttft_ms": float|null, "duration_ms": float,
        "error": {...} (only on errors), "events": [types...] (stream only)}]}
An in-stream `event: error` raises in the SDK; with --allow-http-error it is recorded
as "error" (status stays 200), otherwise the exit status is 1.
"""

import argparse
import json
import os
import ssl
import sys
import time

import anthropic

DEFAULT_KEY = "sk-ant-test-secret-do-not-leak"


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--ca", help="PEM file to trust (self-signed test cert)")
    ap.add_argument("--model", default="claude-test")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--raw-stream", action="store_true",
                    help="stream with messages.create(stream=True) instead of the helper")
    ap.add_argument("--thinking", type=int, default=None, metavar="N")
    ap.add_argument("--tool", action="store_true")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--prompt", default="Say hello to the test server")
    ap.add_argument("--system")
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--header", action="append", default=[], metavar="K=V")
    ap.add_argument("--max-retries", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--allow-http-error", action="store_true")
    a = ap.parse_args()
    if a.raw_stream:
        a.stream = True
    a.headers = {}
    for h in a.header:
        k, sep, v = h.partition("=")
        if not sep or not k:
            ap.error(f"--header expects K=V, got {h!r}")
        a.headers[k.strip()] = v
    if a.thinking is not None:
        a.headers["x-test-reasoning-chunks"] = str(a.thinking)
    if a.tool:
        a.headers["x-test-tool-call"] = "1"
    return a


def request_kwargs(a):
    kw = dict(model=a.model, max_tokens=a.max_tokens,
              messages=[{"role": "user", "content": a.prompt}],
              extra_headers=a.headers or None)
    if a.system:
        kw["system"] = a.system
    if a.thinking is not None:
        kw["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        kw["max_tokens"] = max(a.max_tokens, 2048)
    if a.tool:
        kw["tools"] = [{"name": "get_weather", "description": "Weather for a place",
                        "input_schema": {"type": "object",
                                         "properties": {"q": {"type": "string"}}}}]
    return kw


def dump(m):
    if m is None:
        return None
    return m.model_dump(exclude_unset=True)


def new_result(stream):
    return {"chunks": 0, "thinking_chunks": 0, "content": "", "thinking": "", "usage": None,
            "model": None, "stop_reason": None, "stream": stream, "status": None,
            "request_id": None, "ttft_ms": None, "duration_ms": None, "_t0": time.monotonic()}


def finish(res):
    t0 = res.pop("_t0")
    res["duration_ms"] = round((time.monotonic() - t0) * 1000, 1)
    return res


def take_message(res, msg):
    res["model"] = msg.model
    res["usage"] = dump(msg.usage)
    res["stop_reason"] = msg.stop_reason
    for b in msg.content:
        if b.type == "text":
            res["content"] += b.text
        elif b.type == "thinking":
            res["thinking"] += b.thinking
        elif b.type == "tool_use":
            res["content"] += json.dumps(b.input, separators=(",", ":"))


def take_event(res, ev):
    res["events"].append(ev.type)
    if ev.type == "message_start":
        res["model"] = ev.message.model
        res["usage"] = dump(ev.message.usage)
    elif ev.type == "content_block_delta":
        d = ev.delta
        if d.type in ("text_delta", "input_json_delta"):
            if res["chunks"] == 0 and res["thinking_chunks"] == 0:
                res["ttft_ms"] = round((time.monotonic() - res["_t0"]) * 1000, 1)
            res["chunks"] += 1
            res["content"] += d.text if d.type == "text_delta" else d.partial_json
        elif d.type == "thinking_delta":
            if res["chunks"] == 0 and res["thinking_chunks"] == 0:
                res["ttft_ms"] = round((time.monotonic() - res["_t0"]) * 1000, 1)
            res["thinking_chunks"] += 1
            res["thinking"] += d.thinking
    elif ev.type == "message_delta":
        res["stop_reason"] = ev.delta.stop_reason
        u = dict(res["usage"] or {})
        u.update(dump(ev.usage))
        res["usage"] = u


def one_call(client, a):
    res = new_result(a.stream)
    try:
        if not a.stream:
            raw = client.messages.with_raw_response.create(**request_kwargs(a))
            res["status"] = raw.status_code
            res["request_id"] = raw.headers.get("request-id")
            take_message(res, raw.parse())
            return finish(res)
        res["events"] = []
        if a.raw_stream:
            stream = client.messages.create(stream=True, **request_kwargs(a))
            res["status"] = stream.response.status_code
            res["request_id"] = stream.response.headers.get("request-id")
            try:
                for ev in stream:
                    take_event(res, ev)
            finally:
                stream.close()
            return finish(res)
        with client.messages.stream(**request_kwargs(a)) as s:
            res["status"] = s.response.status_code
            res["request_id"] = s.response.headers.get("request-id")
            for ev in s:
                if ev.type in ("message_start", "content_block_start", "content_block_delta",
                               "content_block_stop", "message_delta", "message_stop"):
                    take_event(res, ev)
            if "message_stop" in res["events"]:
                final = s.get_final_message()  # the SDK's accumulated snapshot
                res["final_content"] = [dump(b) for b in final.content]
        return finish(res)
    except anthropic.APIStatusError as e:
        if not a.allow_http_error:
            raise
        res["status"] = e.status_code
        res["error"] = e.body if isinstance(e.body, (dict, list, str)) else str(e.body)
        return finish(res)


def main():
    a = parse_args()
    http_client = None
    if a.ca:
        http_client = anthropic.DefaultHttpxClient(verify=ssl.create_default_context(cafile=a.ca))
    client = anthropic.Anthropic(base_url=a.base_url,
                                 api_key=os.environ.get("ANTHROPIC_API_KEY", DEFAULT_KEY),
                                 http_client=http_client, max_retries=a.max_retries,
                                 timeout=a.timeout)
    calls = [one_call(client, a) for _ in range(max(1, a.calls))]
    client.close()
    print(json.dumps({"pid": os.getpid(), "calls": calls}, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - any unexpected error -> nonzero exit
        print(f"anthropic_client.py: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
