#!/usr/bin/env python3
"""Loss benchmark: how many stream events a second the agent takes without losing any.

Usage (as root):
    bench_loss.py [--agent PATH]... [--streams 200] [--rates 250,500,1000,2000,4000]
                  [--seconds 8] [--ring-sizes 1M,4M,64M] [--modes plain,tls]

`--streams` concurrent connections (one selector loop) each make one streamed chat completion
against a single-threaded generator in a process of its own, which sends each stream R chunks a
second in the OpenAI chat SSE shape (one send(), so one probe event, per chunk, every 10 ms) for
`--seconds`. (tests/assets/llm_server.py, a thread per connection, reaches ~26k events/s on a
2-core machine: its threads fight over the GIL; this generator reaches the 100k needed.) For each rate R (and each mode: plain HTTP, TLS),
every agent runs in turn; its /metrics are read before and after:
`llmprobe_events_total` (events received), `llmprobe_events_lost_total` (records the kernel could
not write to the ring buffer) and `llmprobe_dropped_total` (everything the agent cut or refused,
by reason). The load generator and the server share the machine with the agent, so the nominal
rate (streams x R, server writes only) is not what happens: the figure is the ACHIEVED rate,
events the agent received plus lost over the load's wall time (client-side reads are events too).

Then, at the highest rate, the sweep is repeated with `--ring-buffer-size` at each of
`--ring-sizes` for the agents that know the flag (the default is 16M).

Prints a table and one `BENCH_JSON` line per agent: the achieved rate at the 100k-events/s step
(200 x 500), its loss, the highest achieved rate with zero loss, the lowest with loss (onset),
and the agent's CPU per event.
"""
import argparse
import multiprocessing
import os
import selectors
import socket
import ssl
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

BODY = b'{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}]}'
TICK = 0.010


def plan(rate):
    """Chunks per stream per 10 ms tick (a fraction accumulates over ticks)."""
    return rate * TICK


def sse_chunk(i):
    ev = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"bench",'
          b'"choices":[{"index":0,"delta":{"content":" tok%d"},"finish_reason":null}]}\n\n' % i)
    return b"%x\r\n%s\r\n" % (len(ev), ev)


TAIL = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"bench",'
        b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")


def generator(listener, cert, key, streams, rate, chunks, ready):
    """The server side, in a process of its own: accepts `streams` connections, reads each one's
    request, then every 10 ms writes each stream its share of chunks, one send() (one probe
    event) per chunk, in the OpenAI chat SSE shape; then the terminal events, and closes.
    Single-threaded: llm_server.py's thread per connection tops out far below 100k writes/s on a
    small machine (the threads fight over the GIL)."""
    ctx = None
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
    ready.set()
    conns = []
    for _ in range(streams):
        c, _ = listener.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx:
            c = ctx.wrap_socket(c, server_side=True)
        buf = b""
        while b"\r\n\r\n" not in buf:
            b = c.recv(4096)
            if not b:
                break
            buf += b
        c.sendall(HEAD)
        conns.append(c)
    pieces = [sse_chunk(i) for i in range(100)]
    sent = 0
    credit = 0.0
    t = time.perf_counter()
    while sent < chunks:
        credit += plan(rate)
        k = min(int(credit), chunks - sent)
        credit -= k
        for c in conns:
            for j in range(k):
                c.sendall(pieces[(sent + j) % 100])
        sent += k
        t += TICK
        delay = t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    for c in conns:
        c.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(TAIL), TAIL))
        c.close()


def load(cert, streams, rate, seconds):
    """Runs the generator and `streams` reading clients (one selector loop here) until every
    stream ends; returns bytes read per stream."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    ready = multiprocessing.Event()
    chunks = max(1, int(rate * seconds))
    gen = multiprocessing.Process(target=generator, args=(listener, cert, cert and cert.replace(
        "cert.pem", "key.pem"), streams, rate, chunks, ready), daemon=True)
    gen.start()
    listener.close()
    ready.wait(10)
    cctx = ssl.create_default_context(cafile=cert) if cert else None
    sel = selectors.DefaultSelector()
    got = []
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           b"Authorization: Bearer sk-bench-loss\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
    for i in range(streams):
        s = socket.create_connection(("127.0.0.1", port))
        if cctx:
            s = cctx.wrap_socket(s, server_hostname="localhost")
        s.sendall(req)
        s.setblocking(False)
        got.append(0)
        sel.register(s, selectors.EVENT_READ, i)
    open_ = streams
    while open_:
        for key, _ in sel.select(timeout=5):
            s = key.fileobj
            while True:
                try:
                    b = s.recv(1 << 16)
                except (ssl.SSLWantReadError, BlockingIOError):
                    break
                if not b:
                    sel.unregister(s)
                    s.close()
                    open_ -= 1
                    break
                got[key.data] += len(b)
                if not cctx:
                    break  # plain: one read per readiness, like a typical event loop
    gen.join(10)
    return got


def measure(binary, args, cert, streams, rate, seconds):
    agent = bc.Agent(binary, *args)
    try:
        m0 = agent.metrics()
        c0 = agent.cpu()
        t0 = time.perf_counter()
        got = load(cert, streams, rate, seconds)
        wall = time.perf_counter() - t0
        time.sleep(0.5)  # the agent drains what is left
        m1 = agent.metrics()
        cpu = agent.cpu() - c0
    finally:
        agent.stop()
    if min(got) == 0:
        raise RuntimeError("a stream returned nothing: the server or client is broken")

    def d(name):
        return m1.get(name, 0.0) - m0.get(name, 0.0)

    events, lost, dropped = d("llmprobe_events_total"), d("llmprobe_events_lost_total"), d("llmprobe_dropped_total")
    reasons = {k.split('reason="', 1)[1].rstrip('"}'): m1[k] - m0.get(k, 0.0)
               for k in m1 if k.startswith("llmprobe_dropped_total{") and m1[k] - m0.get(k, 0.0) > 0}
    return {"nominal": streams * rate, "achieved": (events + lost) / wall, "events": events,
            "lost": lost, "dropped": dropped, "reasons": reasons, "wall": wall,
            "cpu_us_per_event": cpu * 1e6 / max(1.0, events)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--agent", action="append", default=[])
    ap.add_argument("--agent-arg", action="append", default=[])
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--rates", default="250,500,1000,2000,4000", help="chunks/s per stream")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--ring-sizes", default="1M,4M,64M",
                    help="--ring-buffer-size values tried at the top rate (the default is 16M)")
    ap.add_argument("--modes", default="plain,tls")
    ap.add_argument("--quick", action="store_true", help="rates 500,2000; 3 s; plain and TLS; ring 1M")
    a = ap.parse_args()
    if a.quick:
        a.rates, a.seconds, a.ring_sizes = "500,2000", 3, "1M"
    bc.need_root("bench_loss.py")
    bc.raise_fd_limit()
    agents = a.agent or [bc.DEFAULT_AGENT]
    rates = [int(x) for x in a.rates.split(",") if x]
    sizes = [x for x in a.ring_sizes.split(",") if x]
    modes = [m for m in a.modes.split(",") if m]
    tmp = tempfile.mkdtemp(prefix="llmprobe-bench-loss-")
    cert, key = bc.certs(tmp)
    results = {b: [] for b in agents}  # (mode, rate, ring, result)
    for mode in modes:
        mcert = cert if mode == "tls" else None
        load(mcert, 10, 100, 0.2)  # warm-up
        steps = [(r, None) for r in rates] + [(max(rates), s) for s in sizes]
        for rate, ring in steps:
            for binary in agents:
                args = list(a.agent_arg)
                if ring is not None:
                    if "--ring-buffer-size" not in bc.agent_flags(binary):
                        continue
                    args += ["--ring-buffer-size", ring]
                res = measure(binary, args, mcert, a.streams, rate, a.seconds)
                results[binary].append((mode, rate, ring, res))
                print(f"{mode:5} {a.streams} x {rate}/s (nominal {a.streams * rate:>7}/s) "
                      f"ring {ring or 'default':>8}  {os.path.basename(os.path.dirname(binary)) or binary}: "
                      f"achieved {res['achieved']:>9,.0f} events/s, lost {res['lost']:.0f}, "
                      f"dropped {res['dropped']:.0f} {res['reasons'] or ''}, "
                      f"agent CPU {res['cpu_us_per_event']:.2f} us/event", flush=True)
    for binary in agents:
        fig = {"bench": "loss", "agent": binary, "streams": a.streams}
        for mode in modes:
            rows = [(rate, ring, r) for m, rate, ring, r in results[binary] if m == mode]
            default = [(rate, r) for rate, ring, r in rows if ring is None]
            at100k = [r for rate, r in default if rate == 500]
            if at100k:
                fig[f"{mode}.achieved_events_per_s_at_100k_nominal"] = round(at100k[0]["achieved"])
                fig[f"{mode}.lost_at_100k_nominal"] = at100k[0]["lost"]
                fig[f"{mode}.dropped_at_100k_nominal"] = at100k[0]["dropped"]
                fig[f"{mode}.agent_cpu_us_per_event_at_100k_nominal"] = round(at100k[0]["cpu_us_per_event"], 3)
            clean = [r["achieved"] for _, r in default if r["lost"] == 0]
            lossy = [r["achieved"] for _, r in default if r["lost"] > 0]
            fig[f"{mode}.max_achieved_events_per_s_without_loss"] = round(max(clean)) if clean else 0
            if lossy:
                fig[f"{mode}.loss_onset_events_per_s"] = round(min(lossy))
            fig[f"{mode}.max_achieved_events_per_s"] = round(max(r["achieved"] for _, r in default))
            top = max(default, key=lambda x: x[0])[1]
            fig[f"{mode}.lost_fraction_at_top_rate"] = round(top["lost"] / max(1.0, top["events"] + top["lost"]), 6)
            for rate, ring, r in rows:
                if ring is not None:
                    fig[f"{mode}.ring_{ring}.lost_fraction_at_top_rate"] = \
                        round(r["lost"] / max(1.0, r["events"] + r["lost"]), 6)
                    fig[f"{mode}.ring_{ring}.achieved_events_per_s"] = round(r["achieved"])
        bc.bench_json(fig)


if __name__ == "__main__":
    main()
