#!/usr/bin/env python3
"""The client side of the TTFT breakdown tests (tests/ttft.rs): times its own connection and
prints what it measured as one JSON line, so llmprobe's figures can be checked against it.

    ttft_client.py raw --port P --ca CERT
        One TLS connection made step by step, two chat calls on it (keep-alive). Times, on
        CLOCK_MONOTONIC (the clock the kernel stamps with):
          connect_call_s   the connect() call alone
          handshake_call_s the do_handshake() call alone
          connect_s        connect() start to do_handshake() start (the ClientHello goes out
                           first thing in do_handshake): what llmprobe's connect_s spans
          tls_s            do_handshake() start to the first request write: what llmprobe's
                           tls_handshake_s spans
    ttft_client.py sdk --base-url URL --ca CERT
        The openai SDK as an SDK-level tracer sees it: a fresh client (new connection), timed
        from just before `create(stream=True)` to the first chunk with content. A first call on
        another client runs before it, so lazy imports are not timed.
          sdk_ttft_s
    ttft_client.py plain --port P --ca CERT
        The same over plaintext HTTP (the CA is not used):
          connect_s        connect() start to the first request write: what llmprobe's
                           connect_s spans on a plaintext connection
    ttft_client.py async --base-url URL --ca CERT
        One streamed call through AsyncOpenAI (asyncio's memory-BIO TLS: the SSL object never
        touches the socket). Prints the number of chunks.
"""
import argparse
import http.client
import json
import socket
import ssl
import time

BODY = json.dumps({
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "where did the time go?"}],
})


def now():
    return time.monotonic_ns()


def raw(args):
    ctx = ssl.create_default_context(cafile=args.ca)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = now()
    s.connect(("127.0.0.1", args.port))
    t1 = now()
    ss = ctx.wrap_socket(s, server_hostname="localhost", do_handshake_on_connect=False)
    t2 = now()
    ss.do_handshake()
    t3 = now()
    conn = http.client.HTTPConnection("localhost", args.port)
    conn.sock = ss
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}
    t4 = now()
    conn.request("POST", "/v1/chat/completions", BODY, headers)
    r = conn.getresponse()
    r.read()
    first_status = r.status
    conn.request("POST", "/v1/chat/completions", BODY, headers)
    r = conn.getresponse()
    r.read()
    version = ss.version()
    conn.close()
    print(json.dumps({
        "connect_call_s": (t1 - t0) / 1e9,
        "handshake_call_s": (t3 - t2) / 1e9,
        "connect_s": (t2 - t0) / 1e9,
        "tls_s": (t4 - t2) / 1e9,
        "status": [first_status, r.status],
        "tls_version": version,
    }), flush=True)


def sdk(args):
    import httpx
    from openai import OpenAI

    def client():
        return OpenAI(base_url=args.base_url, api_key="sk-test",
                      http_client=httpx.Client(verify=args.ca), max_retries=0)

    def first_chunk(c):
        t0 = now()
        stream = c.chat.completions.create(
            model="gpt-4o-mini", stream=True,
            messages=[{"role": "user", "content": "where did the time go?"}])
        t1 = None
        for chunk in stream:
            if t1 is None and chunk.choices and chunk.choices[0].delta.content:
                t1 = now()
        return (t1 - t0) / 1e9

    warm = client()
    first_chunk(warm)
    warm.close()
    fresh = client()
    ttft = first_chunk(fresh)
    fresh.close()
    print(json.dumps({"sdk_ttft_s": ttft}), flush=True)


def plain(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = now()
    s.connect(("127.0.0.1", args.port))
    t1 = now()
    conn = http.client.HTTPConnection("127.0.0.1", args.port)
    conn.sock = s
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}
    t2 = now()
    conn.request("POST", "/v1/chat/completions", BODY, headers)
    r = conn.getresponse()
    r.read()
    first_status = r.status
    conn.request("POST", "/v1/chat/completions", BODY, headers)
    r = conn.getresponse()
    r.read()
    conn.close()
    print(json.dumps({
        "connect_call_s": (t1 - t0) / 1e9,
        "connect_s": (t2 - t0) / 1e9,
        "status": [first_status, r.status],
    }), flush=True)


def async_call(args):
    import asyncio
    import httpx
    from openai import AsyncOpenAI

    async def run():
        c = AsyncOpenAI(base_url=args.base_url, api_key="sk-test",
                        http_client=httpx.AsyncClient(verify=args.ca), max_retries=0)
        stream = await c.chat.completions.create(
            model="gpt-4o-mini", stream=True,
            messages=[{"role": "user", "content": "where did the time go?"}])
        n = 0
        async for _ in stream:
            n += 1
        await c.close()
        return n

    print(json.dumps({"chunks": asyncio.run(run())}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["raw", "plain", "sdk", "async"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--base-url")
    ap.add_argument("--ca", required=True)
    args = ap.parse_args()
    {"raw": raw, "plain": plain, "sdk": sdk, "async": async_call}[args.mode](args)


if __name__ == "__main__":
    main()
