#!/usr/bin/env python3
"""Benchmark: what llmprobe costs the traffic it observes, and what it costs itself.

Usage (as root, after `cargo xtask build`):
    bench_overhead.py [--requests 300] [--pairs 3] [--agent PATH]...

With several `--agent` binaries (e.g. the previous commit's and this one's), every pair runs the
workload without an agent and then once under each agent in turn, so they are compared in the
same script on the same machine; each agent's figures are reported, and CPU per call as a ratio
to the first agent's.

A keep-alive client (Python http.client over TLS, and over plain HTTP) makes `--requests`
streamed chat completions (8 chunks, no injected delay) against the local test server. Each
round runs the workload once without the agent and once with it, `--pairs` times, in one script
on one machine, and reports the ratio with/without (median of pairs), the agent's CPU seconds per
1000 calls, its peak RSS, and how many records it wrote (it must be every call, twice: client and
server side).
"""
import argparse, http.client, json, os, signal, ssl, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.path.join(ROOT, "tests", "assets")
sys.path.insert(0, ASSETS)
import bench_common as bc  # noqa: E402


def workload(port, tls, ca, n):
    if tls:
        ctx = ssl.create_default_context(cafile=ca)
        conn = http.client.HTTPSConnection("localhost", port, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"model": "bench", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    t0 = time.perf_counter()
    for _ in range(n):
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json",
                                                            "authorization": "Bearer sk-bench"})
        r = conn.getresponse()
        r.read()
    conn.close()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--agent-arg", action="append", default=[], help="extra llmprobe run argument (repeatable)")
    ap.add_argument("--agent", action="append", default=[],
                    help="llmprobe binary to measure (repeatable; default target/release/llmprobe)")
    ap.add_argument("--gpu-pids-file", help="write the servers' pids here (FAKE_NVML_PIDS_FILE of fake_nvml.c), "
                    "so that a stand-in NVML makes them inference servers on a GPU")
    ap.add_argument("--quick", action="store_true", help="100 requests, 1 pair")
    a = ap.parse_args()
    if a.quick:
        a.requests, a.pairs = 100, 1
    tmp = tempfile.mkdtemp(prefix="llmprobe-bench-")
    subprocess.run(["bash", os.path.join(ASSETS, "gen_cert.sh"), tmp], check=True, capture_output=True)
    ca, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    servers = {}
    for kind in ("tls", "plain"):
        args = [sys.executable, os.path.join(ASSETS, "llm_server.py"), "--port", "0", "--ttft-ms", "0",
                "--gap-ms", "0", "--chunks", "8"]
        if kind == "tls":
            args += ["--tls-cert", ca, "--tls-key", key]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        servers[kind] = (p, int(p.stdout.readline().split()[1]))
    if a.gpu_pids_file:
        with open(a.gpu_pids_file, "w") as f:
            f.write("".join(f"{p.pid}\n" for p, _ in servers.values()))
    agents = a.agent or [os.path.join(ROOT, "target", "release", "llmprobe")]
    figures = {b: {"bench": "overhead", "agent": b} for b in agents}
    try:
        for kind in ("tls", "plain"):
            port = servers[kind][1]
            workload(port, kind == "tls", ca, 20)  # warm-up
            stats = [{"ratios": [], "cpu": 0.0, "rss": 0, "records": 0, "calls": 0} for _ in agents]
            for _ in range(a.pairs):
                off = workload(port, kind == "tls", ca, a.requests)
                for binary, st in zip(agents, stats):
                    out = os.path.join(tmp, f"rec-{kind}.jsonl")
                    if os.path.exists(out):
                        os.remove(out)
                    agent = subprocess.Popen([binary, "run", "--jsonl", out, "--metrics-addr", "127.0.0.1:0"]
                                             + a.agent_arg, stderr=subprocess.PIPE, text=True)
                    for line in agent.stderr:
                        if "ready:" in line:
                            break
                    c0 = bc.cpu_seconds(agent.pid)
                    on = workload(port, kind == "tls", ca, a.requests)
                    time.sleep(0.5)
                    st["cpu"] += bc.cpu_seconds(agent.pid) - c0
                    st["rss"] = max(st["rss"], bc.proc_status(agent.pid).get("VmHWM", 0))
                    agent.send_signal(signal.SIGINT)
                    agent.wait()
                    st["records"] += sum(1 for _ in open(out))
                    st["calls"] += a.requests
                    st["ratios"].append(on / off)
            base_cpu = stats[0]["cpu"] / stats[0]["calls"]
            for binary, st in zip(agents, stats):
                r, calls = st["ratios"], st["calls"]
                name = binary if len(agents) > 1 else "agent"
                print(f"{kind:5} {name}: {a.requests} streamed calls x {a.pairs} pairs; wall time with/without agent: "
                      f"median {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f}); "
                      f"agent CPU {st['cpu'] / calls * 1000:.3f} s per 1000 calls "
                      f"(x{st['cpu'] / calls / base_cpu:.2f} of the first agent); agent peak RSS {st['rss'] / 1024:.1f} MiB; "
                      f"records {st['records']} for {calls} calls (client + server side: expect {2 * calls})")
                figures[binary].update({
                    f"{kind}.wall_ratio_with_without": round(statistics.median(r), 4),
                    f"{kind}.agent_cpu_s_per_1000_calls": round(st["cpu"] / calls * 1000, 4),
                    f"{kind}.agent_peak_rss_mib": round(st["rss"] / 1024, 1),
                    f"{kind}.records_per_call": round(st["records"] / calls, 3)})
    finally:
        for p, _ in servers.values():
            p.kill()
    # For `cargo xtask bench` (see xtask/src/bench.rs): one line per binary.
    for f in figures.values():
        print("BENCH_JSON " + json.dumps(f), flush=True)


if __name__ == "__main__":
    main()
