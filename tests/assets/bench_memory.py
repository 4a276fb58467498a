#!/usr/bin/env python3
"""Memory benchmark: the live agent's resident memory with many open streams, and during one
very large response.

Usage (as root):
    bench_memory.py [--agent PATH]... [--streams 1000] [--hold 10] [--gib 1] [--steps streams,large]

1. Concurrent streams: `--streams` TLS connections to the local test server each open one
   streamed chat completion that sends a token every 500 ms, all held open together for
   `--hold` seconds; the agent's VmRSS is sampled every 200 ms (/proc/PID/status). Reported:
   steady RSS (median over the hold), peak (VmHWM), and the agent's own count of tracked
   connections (both sides of each stream are on this machine: expect ~2 per stream). Once with
   the default tokenizer and once with `--token-estimator chars`.
2. One large response, plain HTTP: `--gib` GiB streamed as SSE (64 KiB events), then the same as
   one non-streamed JSON body (Content-Length, written in 1 MiB pieces), each read by one
   client; VmRSS sampled every 200 ms from the request until the agent has taken every event.
   Reported: RSS before, at most (sampled, and VmHWM) and at the end, and the growth of the second half of the
   samples over the first half's peak (flat: ~0).

VmRSS counts the pages of the kernel's ring buffer the agent maps (`anon_inode:bpf-map`: with the
default 16 MiB ring, 32 MiB, its data pages being mapped twice so that records wrap; all of it
from the start) and the binary's text it has run: besides VmRSS each step reports RssAnon (the
agent's own heap and stacks, what its buffers cost) and the ring mapping's share.

Agents alternate within each step. One `BENCH_JSON` line per agent.
"""
import argparse
import http.client
import json
import os
import selectors
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

MIB = 1024 * 1024


def anon_kib(pid):
    """RssAnon of pid, KiB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def ring_kib(pid):
    """Resident KiB of pid's BPF map mappings (the ring buffer), from /proc/PID/smaps."""
    total, in_map = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):
                    in_map = "anon_inode:bpf-map" in line
                elif in_map and first == "Rss:":
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


class Sampler:
    """VmRSS and RssAnon of pid every `period` s, with the time, on a thread."""

    def __init__(self, pid, period=0.2):
        self.samples, self._stop = [], threading.Event()
        self._t = threading.Thread(target=self._run, args=(pid, period), daemon=True)
        self._t.start()

    def _run(self, pid, period):
        t0 = time.perf_counter()
        while not self._stop.is_set():
            rss, anon = bc.proc_status(pid).get("VmRSS"), anon_kib(pid)
            if rss is not None and anon is not None:
                self.samples.append((time.perf_counter() - t0, rss, anon))
            self._stop.wait(period)

    def stop(self):
        self._stop.set()
        self._t.join()
        return self.samples


def open_streams(port, cert, n, chunks):
    ctx = ssl.create_default_context(cafile=cert)
    body = json.dumps({"model": "bench", "stream": True,
                       "messages": [{"role": "user", "content": "tell me a long story"}]}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           b"Authorization: Bearer sk-bench-mem\r\nx-test-ttft-ms: 0\r\nx-test-gap-ms: 500\r\n"
           b"x-test-chunks: %d\r\nContent-Length: %d\r\n\r\n%s" % (chunks, len(body), body))
    socks = []
    for _ in range(n):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
        s.sendall(req)
        s.setblocking(False)
        socks.append(s)
    return socks


def drain(socks, seconds):
    """Reads whatever the open streams send for `seconds`."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for key, _ in sel.select(timeout=0.2):
            try:
                while key.fileobj.recv(1 << 16):
                    pass
            except (ssl.SSLWantReadError, BlockingIOError, OSError):
                pass
    sel.close()


def open_connections(port):
    """TCP connections to or from `port` on this machine that are not listening or in TIME_WAIT."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    ports = {int(parts[1].rsplit(":", 1)[1], 16), int(parts[2].rsplit(":", 1)[1], 16)}
                    if port in ports and parts[3] not in ("0A", "06"):
                        n += 1
        except OSError:
            pass
    return n


def settle_connections(port, limit=60):
    """Waits until the server has closed every stream of a step: the next agent must not start
    in the middle of a thousand closes (a burst it would capture as part of its idle or peak)."""
    end = time.perf_counter() + limit
    while open_connections(port) and time.perf_counter() < end:
        time.sleep(0.2)
    time.sleep(1)


def concurrent_step(binary, args, port, cert, streams, hold):
    agent = bc.Agent(binary, *args)
    try:
        time.sleep(1)
        idle = agent.status().get("VmRSS", 0)
        idle_anon = anon_kib(agent.pid) or 0
        ring = ring_kib(agent.pid)
        socks = open_streams(port, cert, streams, int((hold + 30) / 0.5))
        sampler = Sampler(agent.pid)
        drain(socks, hold)
        tracked = agent.metrics().get("llmprobe_connections_tracked", 0)
        samples = sampler.stop()
        st = agent.status()
        for s in socks:
            s.close()
    finally:
        agent.stop()
    settle_connections(port)
    return {"idle_mib": idle / 1024, "steady_mib": statistics.median(r for _, r, _ in samples) / 1024,
            "peak_mib": st.get("VmHWM", 0) / 1024, "tracked": tracked, "ring_mib": ring / 1024,
            "idle_anon_mib": idle_anon / 1024,
            "steady_anon_mib": statistics.median(a for _, _, a in samples) / 1024,
            "max_anon_mib": max(a for _, _, a in samples) / 1024}


def large_step(binary, args, port, total, stream):
    agent = bc.Agent(binary, *args)
    try:
        time.sleep(1)
        before = agent.status().get("VmRSS", 0)
        before_anon = anon_kib(agent.pid) or 0
        calls0 = agent.metrics().get("llmprobe_llm_calls_total", 0)
        piece = 64 * 1024 if stream else MIB
        body = json.dumps({"model": "bench", "stream": stream,
                           "messages": [{"role": "user", "content": "everything"}]})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        sampler = Sampler(agent.pid)
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, {
            "content-type": "application/json", "authorization": "Bearer sk-bench-mem",
            "x-test-ttft-ms": "0", "x-test-gap-ms": "0", "x-test-chunks": str(total // piece),
            "x-test-chunk-bytes": str(piece)})
        r = conn.getresponse()
        n = 0
        while True:
            b = r.read(MIB)
            if not b:
                break
            n += len(b)
        wall = time.perf_counter() - t0
        conn.close()
        settle(agent, calls0)
        samples = sampler.stop()
        st = agent.status()
        after, peak = st.get("VmRSS", 0), st.get("VmHWM", 0)
        after_anon = anon_kib(agent.pid) or 0
    finally:
        agent.stop()
    if n < total:
        raise RuntimeError(f"read {n} bytes of {total}")
    rss = [r for _, r, _ in samples] or [after]
    anon = [a for _, _, a in samples] or [after_anon]
    half = len(rss) // 2
    return {"before_mib": before / 1024, "max_mib": max(rss) / 1024, "end_mib": after / 1024,
            "peak_mib": peak / 1024,
            "growth_second_half_mib": (max(rss[half:]) - max(rss[:half] or rss)) / 1024,
            "before_anon_mib": before_anon / 1024, "max_anon_mib": max(anon) / 1024,
            "end_anon_mib": after_anon / 1024, "wall_s": wall, "samples": len(rss)}


def settle(agent, calls0, limit=60):
    """Waits until the agent has recorded the call (both sides: client and server), then 1 s."""
    end = time.perf_counter() + limit
    while time.perf_counter() < end:
        if agent.metrics().get("llmprobe_llm_calls_total", 0) >= calls0 + 2:
            break
        time.sleep(0.2)
    time.sleep(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--agent", action="append", default=[])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=10)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="hold 4 s, 0.125 GiB")
    ap.add_argument("--steps", default="streams,large",
                    help="which steps, comma-separated: streams, large (default both)")
    a = ap.parse_args()
    if a.quick:
        a.hold, a.gib = 4, 0.125
    if not set(a.steps.split(",")) <= {"streams", "large"}:
        ap.error("--steps takes streams, large")
    bc.need_root("bench_memory.py")
    bc.raise_fd_limit()
    agents = a.agent or [bc.DEFAULT_AGENT]
    tmp = tempfile.mkdtemp(prefix="llmprobe-bench-mem-")
    cert, key = bc.certs(tmp)
    tls = bc.Server("--ttft-ms", "0", cert=cert, key=key)
    plain = bc.Server("--ttft-ms", "0")
    figs = {b: {"bench": "memory", "agent": b, "streams": a.streams} for b in agents}
    total = int(a.gib * 1024 * MIB)
    try:
        steps = set(a.steps.split(","))
        for est, args in (("tokenizer", []), ("chars", ["--token-estimator", "chars"])):
            if "streams" not in steps:
                break
            for b in agents:
                r = concurrent_step(b, args, tls.port, cert, a.streams, a.hold)
                print(f"{a.streams} open TLS streams, {est}, {b}: steady {r['steady_mib']:.1f} MiB, peak "
                      f"{r['peak_mib']:.1f} MiB (idle {r['idle_mib']:.1f}), tracked {r['tracked']:.0f} "
                      f"connections; RssAnon steady {r['steady_anon_mib']:.1f} MiB, max "
                      f"{r['max_anon_mib']:.1f} (idle {r['idle_anon_mib']:.1f}), ring mapping "
                      f"{r['ring_mib']:.1f} MiB", flush=True)
                f = figs[b]
                f[f"streams_{est}.steady_rss_mib"] = round(r["steady_mib"], 1)
                f[f"streams_{est}.peak_rss_mib"] = round(r["peak_mib"], 1)
                f[f"streams_{est}.idle_rss_mib"] = round(r["idle_mib"], 1)
                f[f"streams_{est}.connections_tracked"] = r["tracked"]
                for k in ("idle_anon_mib", "steady_anon_mib", "max_anon_mib", "ring_mib"):
                    f[f"streams_{est}.{k}"] = round(r[k], 1)
        for kind, stream in (("sse", True), ("body", False)):
            if "large" not in steps:
                break
            for b in agents:
                r = large_step(b, [], plain.port, total, stream)
                print(f"one {a.gib:g} GiB response ({kind}), {b}: RSS before {r['before_mib']:.1f} MiB, "
                      f"max {r['max_mib']:.1f} (peak {r['peak_mib']:.1f}), end {r['end_mib']:.1f}, growth in the second half "
                      f"{r['growth_second_half_mib']:.1f} MiB ({r['wall_s']:.1f} s, {r['samples']} samples); "
                      f"RssAnon before {r['before_anon_mib']:.1f} MiB, max {r['max_anon_mib']:.1f}, end "
                      f"{r['end_anon_mib']:.1f}", flush=True)
                f = figs[b]
                for k in ("before_mib", "max_mib", "peak_mib", "end_mib", "growth_second_half_mib",
                          "before_anon_mib", "max_anon_mib", "end_anon_mib"):
                    f[f"large_{kind}.rss_{k}"] = round(r[k], 1)
    finally:
        tls.stop()
        plain.stop()
    for b in agents:
        bc.bench_json(figs[b])


if __name__ == "__main__":
    main()
