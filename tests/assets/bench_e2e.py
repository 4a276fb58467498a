#!/usr/bin/env python3
"""End-to-end benchmark: what an LLM client observes with the agent running, and without.

Usage (as root, with the openai SDK: target/e2e-venv/bin/python):
    bench_e2e.py [--agent PATH]... [--blocks 8] [--clients 8] [--calls 4] [--burst-calls 200]

Realistic streams: the openai SDK (httpx, keep-alive) makes streamed chat completions over TLS
against the local test server, which answers like a model (first token after 200 ms, then one
token every 20 ms, 50 tokens: ~1.2 s a call). `--clients` threads each make `--calls` calls in
a block, and blocks alternate: without an agent, then under each `--agent` in turn, `--blocks`
times. The figure is the client-observed duration of a call with the agent over without it:
the ratio of block means, averaged over the blocks, with its 95 % confidence interval.

The zero-delay worst case: one client makes `--burst-calls` calls back to back against a server
that sends all 50 chunks at once, alternating the same way; the ratio of the blocks' wall times.

Both sides of every call are on this machine, so the agent records each call twice (client and
server side); the records written are counted and reported.
"""
import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402


def make_client(port, ca):
    import httpx
    import openai
    return openai.OpenAI(base_url=f"https://localhost:{port}/v1", api_key="sk-bench-e2e",
                         http_client=httpx.Client(verify=bc.client_ssl(ca), timeout=60),
                         max_retries=0)


def one_call(client):
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model="bench", stream=True, messages=[{"role": "user", "content": "tell me a story"}])
    n = 0
    for ev in stream:
        if ev.choices and ev.choices[0].delta.content:
            n += 1
    if n == 0:
        raise RuntimeError("a streamed call returned no content")
    return time.perf_counter() - t0


def realistic_block(clients, calls):
    """Per-call durations of `len(clients)` concurrent clients making `calls` calls each."""
    out, lock, errors = [], threading.Lock(), []

    def worker(c):
        try:
            for _ in range(calls):
                d = one_call(c)
                with lock:
                    out.append(d)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return out


def burst_block(client, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
        one_call(client)
    return time.perf_counter() - t0


def count_lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--agent", action="append", default=[])
    ap.add_argument("--agent-arg", action="append", default=[])
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--calls", type=int, default=4, help="calls per client per block")
    ap.add_argument("--burst-calls", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="2 blocks, 4 clients x 2 calls, 50 burst calls")
    a = ap.parse_args()
    if a.quick:
        a.blocks, a.clients, a.calls, a.burst_calls = 2, 4, 2, 50
    bc.need_root("bench_e2e.py")
    agents = a.agent or [bc.DEFAULT_AGENT]
    tmp = tempfile.mkdtemp(prefix="llmprobe-bench-e2e-")
    cert, key = bc.certs(tmp)
    real = bc.Server("--ttft-ms", "200", "--gap-ms", "20", "--chunks", "50", cert=cert, key=key)
    burst = bc.Server("--ttft-ms", "0", "--gap-ms", "0", "--chunks", "50", cert=cert, key=key)
    try:
        clients = [make_client(real.port, cert) for _ in range(a.clients)]
        bclient = make_client(burst.port, cert)
        realistic_block(clients, 1)  # warm-up: connections open, TLS sessions up
        burst_block(bclient, 10)
        off_means, on_means = [], [[] for _ in agents]
        off_burst, on_burst = [], [[] for _ in agents]
        records = [0 for _ in agents]
        calls = [0 for _ in agents]
        for b in range(a.blocks):
            d = realistic_block(clients, a.calls)
            off_means.append(statistics.mean(d))
            off_burst.append(burst_block(bclient, a.burst_calls))
            for i, binary in enumerate(agents):
                out = os.path.join(tmp, f"rec-{i}.jsonl")
                if os.path.exists(out):
                    os.remove(out)
                agent = bc.Agent(binary, *a.agent_arg, jsonl=out)
                try:
                    d = realistic_block(clients, a.calls)
                    on_means[i].append(statistics.mean(d))
                    on_burst[i].append(burst_block(bclient, a.burst_calls))
                    time.sleep(0.5)
                finally:
                    agent.stop()
                records[i] += count_lines(out)
                calls[i] += a.clients * a.calls + a.burst_calls
            print(f"block {b + 1}/{a.blocks}: without {off_means[-1] * 1000:.1f} ms/call, "
                  + ", ".join(f"agent {i}: {m[-1] * 1000:.1f} ms/call" for i, m in enumerate(on_means)),
                  file=sys.stderr, flush=True)
        for i, binary in enumerate(agents):
            ratios = [on / off for on, off in zip(on_means[i], off_means)]
            r, ci = bc.mean_ci(ratios)
            br, bci = bc.mean_ci([on / off for on, off in zip(on_burst[i], off_burst)])
            print(f"{binary}: realistic streams (TTFT 200 ms, 20 ms x 50 tokens, TLS, openai SDK, "
                  f"{a.clients} clients): call {statistics.mean(on_means[i]) * 1000:.1f} ms with, "
                  f"{statistics.mean(off_means) * 1000:.1f} ms without; ratio {r:.4f} ± {ci:.4f} "
                  f"(95 %, {len(ratios)} blocks; goal < 1.005). Zero-delay burst: ratio {br:.3f} ± {bci:.3f}. "
                  f"Records {records[i]} for {calls[i]} calls (client + server side: expect {2 * calls[i]})")
            bc.bench_json({
                "bench": "e2e", "agent": binary,
                "realistic_call_ms_without": round(statistics.mean(off_means) * 1000, 2),
                "realistic_call_ms_with": round(statistics.mean(on_means[i]) * 1000, 2),
                "realistic_duration_ratio": round(r, 5),
                "realistic_duration_ratio_ci95": round(ci, 5),
                "zero_delay_duration_ratio": round(br, 4),
                "zero_delay_duration_ratio_ci95": round(bci, 4),
                "records_per_call": round(records[i] / calls[i], 3),
            })
    finally:
        real.stop()
        burst.stop()


if __name__ == "__main__":
    main()
