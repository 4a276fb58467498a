#!/usr/bin/env python3
"""Real `openai` SDK client for llmprobe's e2e tests.

    python openai_client.py --base-url https://127.0.0.1:PORT/v1 [--ca cert.pem]
        [--model test-model] [--stream] [--include-usage] [--calls N]
        [--concurrent N] [--abort-after K] [--prompt TEXT] [--header K=V ...]
        [--wait-file PATH] [--traceparent VALUE] [--max-retries 0]
        [--timeout 60] [--allow-http-error] [--client auto|sync|async]
        [--reasoning N]

API key: env OPENAI_API_KEY (default "sk-test-secret-do-not-leak").

Prints exactly ONE JSON line on stdout at the end (plus a "WAITING" line before
it when --wait-file is used):
    {"pid": PID, "calls": [{"chunks": n_content_chunks, "content": "...",
                            "usage": {...}|null, "model": "...-0001"|null,
                            "stream": bool, "aborted": bool, "status": 200,
                            "request_id": "req-N"|null, "ttft_ms": float|null,
                            "duration_ms": float}, ...]}
(plus "error": body when --allow-http-error recorded an HTTP error status or an
in-stream error event; plus "reasoning_chunks"/"reasoning" with --reasoning)
"ttft_ms"/"duration_ms" are measured client-side from just before the SDK call
to the first content chunk / to the end of the call (ttft_ms is null for
non-stream calls).
"chunks" is the number of stream chunks that carried non-empty delta content
(0 for non-stream calls). Exit status is nonzero on any unexpected exception.

Modes
  default           N (--calls) sequential calls on ONE client (one keep-alive
                    connection), non-stream unless --stream.
  --client          auto (default) | sync | async. auto = AsyncOpenAI when
                    --concurrent is given or when --stream is combined with
                    --calls > 1, else the sync OpenAI client. Reason: the sync
                    SDK Stream stops reading at "data: [DONE]" and closes the
                    response before the terminating 0-size chunk is read, so httpx
                    drops the connection and every sync streaming call opens a NEW
                    connection; AsyncStream drains the body on HTTP/1.1 and keeps
                    the connection alive. Force --client sync to get the
                    one-connection-per-stream behaviour.
  --concurrent N    AsyncOpenAI, N streaming calls at once (asyncio.gather), each
                    on its own connection. Implies --stream. Combined with
                    --calls M every one of the N workers makes M sequential calls.
  --abort-after K   streaming; after K chunks the stream is closed
                    (stream.close() -> the HTTP response is closed, which drops the
                    connection because the body was not fully read); the process
                    then stays alive ~0.5 s before exiting.
  --reasoning N     sends "x-test-reasoning-chunks: N" (the test server then streams N
                    delta.reasoning_content chunks before the content); every call then
                    also reports "reasoning_chunks" (stream chunks with non-empty
                    reasoning_content/reasoning; 0 for non-stream) and "reasoning" (the
                    text). Without --reasoning the output has no such keys.
  --wait-file PATH  the client (and its TLS context) is built first, then "WAITING"
                    is printed and the file is polled until it exists; only then the
                    first call is made ("client started before the agent").
"""

import argparse
import asyncio
import json
import os
import ssl
import sys
import time

import openai
from openai import AsyncOpenAI, OpenAI

DEFAULT_KEY = "sk-test-secret-do-not-leak"
WANT_REASONING = False  # set by --reasoning


def _reasoning_of(obj):
    # DeepSeek/Qwen "reasoning_content", vLLM "reasoning": extra fields on the SDK model.
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get("reasoning_content") or extra.get("reasoning") or ""


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--ca", help="PEM file to trust (self-signed test cert)")
    ap.add_argument("--model", default="test-model")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--include-usage", action="store_true")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--concurrent", type=int, default=0)
    ap.add_argument("--abort-after", type=int, default=None)
    ap.add_argument("--prompt", default="Say hello to the test server")
    ap.add_argument("--prompt-words", type=int, default=0,
                    help="use a prompt of N words instead (large request bodies)")
    ap.add_argument("--header", action="append", default=[], metavar="K=V")
    ap.add_argument("--wait-file")
    ap.add_argument("--traceparent")
    ap.add_argument("--max-retries", type=int, default=0,
                    help="SDK retries (default 0 so every call is exactly one request)")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--allow-http-error", action="store_true",
                    help="record an HTTP error status (e.g. forced 429), or an in-stream "
                         "error event (status stays 200), instead of failing")
    ap.add_argument("--client", choices=["auto", "sync", "async"], default="auto")
    ap.add_argument("--reasoning", type=int, default=None, metavar="N",
                    help="ask the test server for N reasoning chunks (x-test-reasoning-chunks)")
    a = ap.parse_args()
    if a.prompt_words > 0:
        a.prompt = " ".join(f"w{i % 1000}" for i in range(a.prompt_words))
    if a.concurrent or a.abort_after is not None:
        a.stream = True
    if a.client == "auto":
        a.client = "async" if (a.concurrent or (a.stream and a.calls > 1)) else "sync"
    if a.concurrent and a.client == "sync":
        ap.error("--concurrent needs the async client")
    a.headers = {}
    for h in a.header:
        k, sep, v = h.partition("=")
        if not sep or not k:
            ap.error(f"--header expects K=V, got {h!r}")
        a.headers[k.strip()] = v
    if a.traceparent:
        a.headers["traceparent"] = a.traceparent
    if a.reasoning is not None:
        a.headers["x-test-reasoning-chunks"] = str(a.reasoning)
        global WANT_REASONING
        WANT_REASONING = True
    return a


def ssl_context(ca):
    # ssl.SSLContext works with both httpx and httpx2 based SDKs (a str path is
    # deprecated in httpx2).
    return ssl.create_default_context(cafile=ca)


def request_kwargs(a):
    kw = dict(model=a.model,
              messages=[{"role": "user", "content": a.prompt}],
              extra_headers=a.headers or None)
    if a.stream:
        kw["stream"] = True
        if a.include_usage:
            kw["stream_options"] = {"include_usage": True}
    return kw


def dump_usage(u):
    if u is None:
        return None
    try:
        return u.model_dump(exclude_unset=True)
    except Exception:  # pragma: no cover - very old SDKs
        return u.dict(exclude_unset=True)


def new_result(stream):
    res = {"chunks": 0, "content": "", "usage": None, "model": None,
           "stream": stream, "aborted": False, "status": None, "request_id": None,
           "ttft_ms": None, "duration_ms": None, "_t0": time.monotonic()}
    if WANT_REASONING:
        res["reasoning_chunks"] = 0
        res["reasoning"] = ""
    return res


def finish(res):
    t0 = res.pop("_t0")
    res["duration_ms"] = round((time.monotonic() - t0) * 1000, 1)
    return res


def take_chunk(res, chunk):
    if res["model"] is None and getattr(chunk, "model", None):
        res["model"] = chunk.model
    if getattr(chunk, "usage", None) is not None:
        res["usage"] = dump_usage(chunk.usage)
    for ch in chunk.choices or []:
        if WANT_REASONING and ch.delta is not None:
            r = _reasoning_of(ch.delta)
            if r:
                res["reasoning_chunks"] += 1
                res["reasoning"] += r
        if ch.delta is not None and ch.delta.content:
            if res["chunks"] == 0:
                res["ttft_ms"] = round((time.monotonic() - res["_t0"]) * 1000, 1)
            res["chunks"] += 1
            res["content"] += ch.delta.content


def take_completion(res, resp):
    res["model"] = resp.model
    res["usage"] = dump_usage(resp.usage)
    res["content"] = "".join((c.message.content or "") for c in resp.choices)
    if WANT_REASONING:
        res["reasoning"] = "".join(_reasoning_of(c.message) for c in resp.choices)
    res["request_id"] = getattr(resp, "_request_id", None)
    res["status"] = 200


def http_error(res, e):
    res["status"] = e.status_code
    try:
        res["error"] = e.body if isinstance(e.body, (dict, list, str)) else str(e.body)
    except Exception:
        res["error"] = str(e)


# ---------------------------------------------------------------- sync ----

def sync_call(client, a):
    res = new_result(a.stream)
    try:
        if not a.stream:
            take_completion(res, client.chat.completions.create(**request_kwargs(a)))
            return finish(res)
        stream = client.chat.completions.create(**request_kwargs(a))
        res["status"] = stream.response.status_code
        res["request_id"] = stream.response.headers.get("x-request-id")
        try:
            n = 0
            for chunk in stream:
                take_chunk(res, chunk)
                n += 1
                if a.abort_after is not None and n >= a.abort_after:
                    res["aborted"] = True
                    break
        finally:
            stream.close()
    except openai.APIStatusError as e:
        if not a.allow_http_error:
            raise
        http_error(res, e)
    except openai.APIError as e:  # in-stream error event (HTTP status was 200)
        if not a.allow_http_error:
            raise
        res["error"] = e.body if isinstance(e.body, (dict, list, str)) else str(e)
    return finish(res)


def run_sync(a):
    http_client = None
    if a.ca:
        http_client = openai.DefaultHttpxClient(verify=ssl_context(a.ca))
    client = OpenAI(base_url=a.base_url,
                    api_key=os.environ.get("OPENAI_API_KEY", DEFAULT_KEY),
                    http_client=http_client, max_retries=a.max_retries, timeout=a.timeout)
    wait_for_file(a.wait_file)
    calls = []
    for _ in range(max(1, a.calls)):
        calls.append(sync_call(client, a))
        if a.abort_after is not None:
            time.sleep(0.5)  # keep the process (and its state) alive after the abort
    client.close()
    return calls


# --------------------------------------------------------------- async ----

async def async_call(client, a):
    res = new_result(a.stream)
    try:
        if not a.stream:
            take_completion(res, await client.chat.completions.create(**request_kwargs(a)))
            return finish(res)
        stream = await client.chat.completions.create(**request_kwargs(a))
        res["status"] = stream.response.status_code
        res["request_id"] = stream.response.headers.get("x-request-id")
        try:
            n = 0
            async for chunk in stream:
                take_chunk(res, chunk)
                n += 1
                if a.abort_after is not None and n >= a.abort_after:
                    res["aborted"] = True
                    break
        finally:
            await stream.close()
    except openai.APIStatusError as e:
        if not a.allow_http_error:
            raise
        http_error(res, e)
    except openai.APIError as e:  # in-stream error event (HTTP status was 200)
        if not a.allow_http_error:
            raise
        res["error"] = e.body if isinstance(e.body, (dict, list, str)) else str(e)
    return finish(res)


async def async_worker(client, a):
    out = []
    for _ in range(max(1, a.calls)):
        out.append(await async_call(client, a))
        if a.abort_after is not None:
            await asyncio.sleep(0.5)  # keep the process alive after the abort
    return out


async def run_async(a):
    http_client = None
    if a.ca:
        http_client = openai.DefaultAsyncHttpxClient(verify=ssl_context(a.ca))
    client = AsyncOpenAI(base_url=a.base_url,
                         api_key=os.environ.get("OPENAI_API_KEY", DEFAULT_KEY),
                         http_client=http_client, max_retries=a.max_retries,
                         timeout=a.timeout)
    wait_for_file(a.wait_file)
    results = await asyncio.gather(*(async_worker(client, a)
                                     for _ in range(max(1, a.concurrent))))
    await client.close()
    return [r for worker in results for r in worker]


# ---------------------------------------------------------------- main ----

def wait_for_file(path):
    if not path:
        return
    print("WAITING", flush=True)
    while not os.path.exists(path):
        time.sleep(0.02)


def main():
    a = parse_args()
    if a.client == "async":
        calls = asyncio.run(run_async(a))
    else:
        calls = run_sync(a)
    print(json.dumps({"pid": os.getpid(), "calls": calls}, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - any unexpected error -> nonzero exit
        print(f"openai_client.py: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
