#!/usr/bin/env python3
"""HTTP/2 client for llmprobe's e2e tests: httpx with http2=True, many streams on ONE connection.

    python h2_client.py --base-url URL [--ca cert.pem] [--streams 3] [--whole 1]
                        [--abort-after K] [--model test-model]

Opens one HTTP/2 connection (AsyncClient(http2=True), a pool of one) and runs at once:
--streams streaming chat completions (stream_options.include_usage), --whole non-stream ones,
and, with --abort-after K, one more stream closed after K SSE events (httpx cancels the stream:
RST_STREAM CANCEL), the connection staying open for the others. Authorization: Bearer
$OPENAI_API_KEY.

Prints ONE JSON line: {"pid": PID, "http_versions": [...], "calls": [{"stream": bool,
"status": int, "events": int, "aborted": bool, "request_id": str|null}, ...]}. Exit status 1
if any call did not use HTTP/2.
"""

import argparse
import asyncio
import json
import os
import sys

import httpx


async def call(client, a, stream, abort_after=None):
    body = {"model": a.model, "stream": stream,
            "messages": [{"role": "user", "content": "Say hello to the test server"}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
    events = 0
    async with client.stream("POST", "/chat/completions", json=body) as r:
        out = {"stream": stream, "status": r.status_code, "http_version": r.http_version,
               "request_id": r.headers.get("x-request-id"), "aborted": False}
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                events += 1
                if abort_after is not None and events >= abort_after:
                    out["aborted"] = True
                    break
        out["events"] = events
    return out


async def main_async(a):
    key = os.environ.get("OPENAI_API_KEY", "sk-test-secret-do-not-leak")
    verify = a.ca if a.ca else True
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=a.base_url, http2=True, http1=False
                                 if a.base_url.startswith("http:") else True,
                                 verify=verify, limits=limits, timeout=60,
                                 headers={"authorization": f"Bearer {key}"}) as client:
        # One call first so the later ones share its connection (no race to open several).
        first = await call(client, a, False)
        jobs = [call(client, a, True) for _ in range(a.streams)]
        jobs += [call(client, a, False) for _ in range(max(a.whole - 1, 0))]
        if a.abort_after:
            jobs.append(call(client, a, True, a.abort_after))
        calls = [first] + list(await asyncio.gather(*jobs))
        # Let the reset reach the server before the connection closes.
        await asyncio.sleep(0.3)
    versions = sorted({c.pop("http_version") for c in calls})
    print(json.dumps({"pid": os.getpid(), "http_versions": versions, "calls": calls}), flush=True)
    return 0 if versions == ["HTTP/2"] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--ca")
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--whole", type=int, default=1)
    ap.add_argument("--abort-after", type=int)
    ap.add_argument("--model", default="test-model")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
