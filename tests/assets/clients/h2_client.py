#!/usr/bin/env python3
"""HTTP/2 client for llmprobe's e2e tests: httpx with http2=True, many streams on ONE connection,
and a stream reset mid-response (RST_STREAM) with the `h2` library httpx itself runs on.

    python h2_client.py --base-url URL [--ca cert.pem] [--streams 3] [--whole 1]
                        [--reset-after K] [--model test-model]

1. httpx: one HTTP/2 connection (AsyncClient(http2=True), a pool of one): a non-stream call,
   then at once --streams streaming chat completions (stream_options.include_usage) and
   --whole - 1 more non-stream ones. (httpx does not reset a stream it stops reading: it only
   drops the rest, so the stream still ends on the wire.)
2. With --reset-after K: one more connection driven with `h2` (hyper-h2): two streams at once;
   the first is cancelled with RST_STREAM (CANCEL) after K SSE events, the second is read to its
   end on the same connection.
Authorization: Bearer $OPENAI_API_KEY.

Prints ONE JSON line: {"pid": PID, "http_versions": [...], "calls": [{"stream": bool,
"status": int, "events": int, "aborted": bool, "request_id": str|null}, ...]}. Exit status 1
if any call did not use HTTP/2 or did not end as expected.
"""

import argparse
import asyncio
import json
import os
import socket
import ssl
import sys
import urllib.parse

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx


async def call(client, a, stream):
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
        calls = [first] + list(await asyncio.gather(*jobs))
    if a.reset_after:
        calls += reset_streams(a, key)
    versions = sorted({c.pop("http_version") for c in calls})
    print(json.dumps({"pid": os.getpid(), "http_versions": versions, "calls": calls}), flush=True)
    ok = versions == ["HTTP/2"] and all(c["status"] == 200 for c in calls)
    return 0 if ok else 1


def reset_streams(a, key):
    """Two streams on one h2 connection; the first reset after a.reset_after events."""
    u = urllib.parse.urlsplit(a.base_url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=a.ca)
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
        assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    body = json.dumps({"model": a.model, "stream": True,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user",
                                     "content": "Say hello to the test server"}]}).encode()
    calls = {}
    for _ in range(2):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", u.scheme),
                                (":authority", u.netloc), (":path", u.path + "/chat/completions"),
                                ("authorization", f"Bearer {key}"),
                                ("content-type", "application/json"),
                                ("content-length", str(len(body)))])
        conn.send_data(sid, body, end_stream=True)
        calls[sid] = {"stream": True, "status": 0, "http_version": "HTTP/2",
                      "request_id": None, "aborted": False, "events": 0, "done": False}
    sock.sendall(conn.data_to_send())
    first = min(calls)
    while not all(c["done"] for c in calls.values()):
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            c = calls.get(getattr(ev, "stream_id", None))
            if c is None or c["done"]:
                continue
            if isinstance(ev, h2.events.ResponseReceived):
                hdrs = {k.decode(): v.decode() for k, v in ev.headers}
                c["status"] = int(hdrs[":status"])
                c["request_id"] = hdrs.get("x-request-id")
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                c["events"] += ev.data.count(b"data:")
                if ev.stream_id == first and c["events"] >= a.reset_after:
                    conn.reset_stream(first, h2.errors.ErrorCodes.CANCEL)
                    c["aborted"] = c["done"] = True
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                c["done"] = True
        sock.sendall(conn.data_to_send())
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.close()
    out = []
    for c in calls.values():
        c.pop("done")
        out.append(c)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--ca")
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--whole", type=int, default=1)
    ap.add_argument("--reset-after", type=int)
    ap.add_argument("--model", default="test-model")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
