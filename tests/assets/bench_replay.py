#!/usr/bin/env python3
"""Replay throughput benchmark: several llmprobe binaries over one synthetic capture.

The capture holds N concurrent plaintext connections (default 1000), each carrying one streamed
LLM call whose response arrives in C chunks (default 300), all interleaved round-robin as a busy
node would deliver them. Dialects rotate over the connections: OpenAI chat completions (SSE, usage
in the last event), Anthropic messages (SSE), Ollama chat (NDJSON) and Gemini (SSE), so framing and
dialect code are all on the path. One in four calls reports no usage (tokens are estimated).

Each binary runs `llmprobe replay CAPTURE --jsonl OUT`, alternating binaries run by run, and the
script prints per binary: median wall time, events/s (capture events over wall time), peak RSS
(ru_maxrss of the child), and the ratio of every binary against the first. All binaries must
produce the same number of records, and their record files must be identical.

    python3 tests/assets/bench_replay.py --agent OLD_BIN --agent NEW_BIN [--runs 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BASE_TS = 10_000_000_000
CLOCK_OFFSET = 1_795_804_100_000_000_000


def request(dialect, i):
    if dialect == "openai":
        body = {
            "model": "gpt-4o-mini",
            "stream": True,
            "stream_options": {"include_usage": i % 4 != 0},
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"Question {i}: " + "tell me about rivers " * 20},
            ],
        }
        path = "/v1/chat/completions"
    elif dialect == "anthropic":
        body = {
            "model": "claude-sonnet-4",
            "max_tokens": 1024,
            "stream": True,
            "messages": [{"role": "user", "content": f"Question {i}: " + "mountains " * 30}],
        }
        path = "/v1/messages"
    elif dialect == "ollama":
        body = {
            "model": "llama3.2",
            "messages": [{"role": "user", "content": f"Question {i}: " + "oceans " * 30}],
        }
        path = "/api/chat"
    else:
        body = {"contents": [{"role": "user", "parts": [{"text": f"Question {i}: " + "stars " * 30}]}]}
        path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    raw = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 10.0.0.1:8000\r\nUser-Agent: bench/1.0\r\n"
        f"Content-Type: application/json\r\nAccept: */*\r\nContent-Length: {len(raw)}\r\n\r\n"
    ).encode()
    return head + raw


def response_head(dialect):
    ctype = "application/x-ndjson" if dialect == "ollama" else "text/event-stream"
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n"
        "Cache-Control: no-cache\r\n\r\n"
    ).encode()


def chunk(dialect, i, k, last, usage):
    word = f" word{k % 97}"
    if dialect == "openai":
        ev = {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion.chunk",
            "created": 1790000000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": "stop" if last else None}],
        }
        out = b"data: " + json.dumps(ev).encode() + b"\n\n"
        if last:
            if usage:
                u = {
                    "id": f"chatcmpl-{i}",
                    "object": "chat.completion.chunk",
                    "model": "gpt-4o-mini",
                    "choices": [],
                    "usage": {"prompt_tokens": 50, "completion_tokens": k + 1, "total_tokens": 51 + k},
                }
                out += b"data: " + json.dumps(u).encode() + b"\n\n"
            out += b"data: [DONE]\n\n"
        return out
    if dialect == "anthropic":
        out = b""
        if k == 0:
            start = {
                "type": "message_start",
                "message": {
                    "id": f"msg_{i}", "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4", "content": [],
                    "usage": {"input_tokens": 40, "output_tokens": 1},
                },
            }
            out += b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n"
        d = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}
        out += b"event: content_block_delta\ndata: " + json.dumps(d).encode() + b"\n\n"
        if last:
            md = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": k + 1}}
            out += b"event: message_delta\ndata: " + json.dumps(md).encode() + b"\n\n"
            out += b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        return out
    if dialect == "ollama":
        ev = {
            "model": "llama3.2",
            "created_at": "2026-11-28T10:00:00Z",
            "message": {"role": "assistant", "content": word},
            "done": last,
        }
        if last:
            ev.update(done_reason="stop", prompt_eval_count=30, eval_count=k + 1,
                      total_duration=900000000, eval_duration=800000000)
        return json.dumps(ev).encode() + b"\n"
    ev = {"candidates": [{"content": {"role": "model", "parts": [{"text": word}]}, "index": 0}],
          "modelVersion": "gemini-2.5-flash"}
    if last:
        ev["candidates"][0]["finishReason"] = "STOP"
        if usage:
            ev["usageMetadata"] = {"promptTokenCount": 30, "candidatesTokenCount": k + 1, "totalTokenCount": 31 + k}
    return b"data: " + json.dumps(ev).encode() + b"\r\n\r\n"


def http_chunk(payload):
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def generate(path, conns, chunks):
    dialects = ["openai", "anthropic", "ollama", "gemini"]
    ts = BASE_TS
    events = 0
    with open(path, "w") as f:
        def emit(obj):
            nonlocal events
            f.write(json.dumps(obj, separators=(",", ":")))
            f.write("\n")
            events += 1

        f.write(json.dumps({"ev": "header", "llmprobe_capture": 1, "clock_offset_ns": CLOCK_OFFSET}) + "\n")

        def meta(i):
            return {"pid": 1000 + i % 50, "tid": 1000 + i % 50, "fd": 10 + i // 50,
                    "conn_id": (i + 1) * 2 + 1, "ts_ns": ts, "comm": "python3"}

        def data(i, direction, payload):
            d = meta(i)
            d.update(dir=direction, tls=False, offset=0, total_len=len(payload), text=payload.decode())
            emit({"ev": "data", **d})

        for i in range(conns):
            ts += 1000
            emit({"ev": "conn_open", **meta(i), "peer": "10.0.0.1:8000", "role_hint": 1})
        for i in range(conns):
            ts += 1000
            data(i, "egress", request(dialects[i % 4], i))
        for i in range(conns):
            ts += 1000
            data(i, "ingress", response_head(dialects[i % 4]))
        for k in range(chunks):
            last = k == chunks - 1
            for i in range(conns):
                ts += 1000
                d = dialects[i % 4]
                payload = http_chunk(chunk(d, i, k, last, i % 4 != 3 or d in ("anthropic", "ollama")))
                if last:
                    payload += b"0\r\n\r\n"
                data(i, "ingress", payload)
        for i in range(conns):
            ts += 1000
            emit({"ev": "conn_close", **meta(i)})
    return events


def run_once(binary, capture, out):
    if os.path.exists(out):
        os.unlink(out)  # the JSONL writer appends
    start = time.monotonic()
    proc = subprocess.Popen(
        [binary, "replay", capture, "--jsonl", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{binary} failed: {err}")
    with open(out, "rb") as f:
        records = sum(1 for _ in f)
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, records


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", action="append", required=True, help="llmprobe binary (first is the baseline)")
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--chunks", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", help="write the capture here and keep it")
    ap.add_argument("--quick", action="store_true", help="200 connections x 50 chunks, 1 run")
    args = ap.parse_args()
    if args.quick:
        args.connections, args.chunks, args.runs = 200, 50, 1

    tmp = tempfile.mkdtemp(prefix="llmprobe-bench-")
    capture = args.keep or os.path.join(tmp, "synthetic.capture.jsonl")
    events = generate(capture, args.connections, args.chunks)
    size = os.path.getsize(capture)
    print(f"capture: {args.connections} connections x {args.chunks} chunks = {events} events, {size / 2**20:.1f} MiB")

    results = {b: [] for b in args.agent}
    outputs = {}
    for r in range(args.runs):
        order = args.agent if r % 2 == 0 else list(reversed(args.agent))
        for b in order:
            out = os.path.join(tmp, f"out-{args.agent.index(b)}.jsonl")
            results[b].append(run_once(b, capture, out))
            outputs[b] = out

    base = None
    failed = False
    print(f"{'binary':<40} {'wall s':>8} {'events/s':>12} {'cpu s':>8} {'peak RSS MiB':>13} {'records':>8} {'ratio':>7}")
    contents = {}
    bench_json = []
    for b in args.agent:
        rs = results[b]
        wall = statistics.median(r[0] for r in rs)
        cpu = statistics.median(r[2] for r in rs)
        rss = max(r[1] for r in rs)
        records = rs[-1][3]
        eps = events / wall
        if base is None:
            base = eps
        print(f"{b[-40:]:<40} {wall:>8.2f} {eps:>12.0f} {cpu:>8.2f} {rss / 2**20:>13.1f} {records:>8} {eps / base:>6.2f}x")
        bench_json.append({"bench": "replay", "agent": b, "events": events, "wall_s": round(wall, 3),
                           "events_per_s": round(eps), "cpu_s": round(cpu, 3),
                           "peak_rss_mib": round(rss / 2**20, 1), "records": records})
        with open(outputs[b], "rb") as f:
            contents[b] = f.read()
        if records != args.connections:
            print(f"  error: {records} records for {args.connections} calls")
            failed = True
    first = contents[args.agent[0]]
    for b in args.agent[1:]:
        if contents[b] != first:
            print(f"  error: records of {b} differ from the baseline's")
            failed = True
    # For `cargo xtask bench` (see xtask/src/bench.rs): one line per binary.
    for j in bench_json:
        j["records_identical_to_first"] = int(contents[j["agent"]] == first)
        print("BENCH_JSON " + json.dumps(j), flush=True)
    if not args.keep:
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
