#!/usr/bin/env python3
"""First calls after exec: how many LLM calls are missed by processes that start after the agent
and make their call at once (`cargo xtask bench`, or by hand as root:
`python3 tests/assets/bench_first_calls.py --agent target/release/llmprobe [--runs 20]`).

The client is `clients/first_call.c` (built here with cc, OpenSSL's prototypes declared in it):
it waits 0, 10 or 100 ms after main(), then connects, does the TLS handshake and sends one chat
completion to the local test server. Each run is a new process; a run is missed when the agent
wrote no client record for its pid. Cases:
- host: the client uses the host's libssl, probed per file at the agent's start;
- fresh: the client loads a fresh copy of libssl (LD_LIBRARY_PATH, a new inode every run), a
  file the agent has never seen: discovery must find it from the exec/mmap hints and attach
  before the first SSL_write;
- comm_host, comm_fresh: the same under `--comm first_call` (uprobes placed per process: every
  new process needs its own, even on a known file).
The agent's debug log gives the hint-to-probes latency of each fresh run (`probes placed N ms
after its exec/mmap hint`): p50 and max are reported.

Prints the figures and, last, one `BENCH_JSON {...}` line per agent.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import ASSETS, Agent, Server, bench_json, certs, need_root  # noqa: E402
import json, re  # noqa: E402

DELAYS = [0, 10, 100]


def system_lib(name):
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.strip().startswith(name) and "=> " in line:
            return os.path.realpath(line.rsplit("=> ", 1)[1].strip())
    sys.exit(f"ldconfig -p lists no {name}")


def build_client(tmp):
    exe = os.path.join(tmp, "first_call")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(ASSETS, "clients", "first_call.c"),
                    system_lib("libssl.so.3"), system_lib("libcrypto.so.3")], check=True)
    return exe


def records(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.endswith("\n") and line.strip():
                    out.append(json.loads(line))
    except OSError:
        pass
    return out


def run_case(agent, exe, port, tmp, fresh, delay, runs):
    """Runs the client `runs` times: its pids, and the hint-to-probes latencies (ms) logged."""
    pids, lat = [], []
    for i in range(runs):
        env = dict(os.environ)
        lib_dir = None
        if fresh:
            lib_dir = tempfile.mkdtemp(prefix="fresh-", dir=tmp)
            shutil.copy(system_lib("libssl.so.3"), os.path.join(lib_dir, "libssl.so.3"))
            env["LD_LIBRARY_PATH"] = lib_dir
        seen = len(agent.log)
        p = subprocess.run([exe, str(port), str(delay)], capture_output=True, text=True, env=env)
        fields = p.stdout.split()
        if p.returncode != 0 or len(fields) != 2 or fields[1] != "ok":
            sys.exit(f"first_call failed: {p.stdout!r} {p.stderr!r}")
        pid = int(fields[0])
        pids.append(pid)
        time.sleep(0.15)
        for line in agent.log[max(0, seen - 100):]:
            m = re.search(rf"pid {pid}: probes placed ([0-9.]+) ms after", line)
            if m:
                lat.append(float(m.group(1)))
                break
        if lib_dir:
            shutil.rmtree(lib_dir, ignore_errors=True)
        time.sleep(0.05)
    return pids, lat


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", action="append", default=[])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    need_root("bench_first_calls.py")
    runs = 5 if a.quick else a.runs
    agents = a.agent or [os.path.join(os.path.dirname(os.path.dirname(ASSETS)), "target",
                                      "release", "llmprobe")]
    tmp = tempfile.mkdtemp(prefix="llmprobe-bench-first-")
    cert, key = certs(tmp)
    exe = build_client(tmp)
    server = Server("--ttft-ms", "0", cert=cert, key=key)
    os.environ["RUST_LOG"] = "info,llmprobe::pipeline::discovery=debug"
    try:
        for binary in agents:
            summary = {"bench": "first_calls", "agent": binary, "runs_per_case": runs}
            for scope in ["all", "comm"]:
                jsonl = os.path.join(tmp, f"records-{scope}.jsonl")
                extra = ["--comm", "first_call"] if scope == "comm" else []
                agent = Agent(binary, *extra, jsonl=jsonl)
                time.sleep(1.0)
                done = []
                try:
                    for fresh in [False, True]:
                        for delay in DELAYS:
                            pids, lat = run_case(agent, exe, server.port, tmp, fresh, delay, runs)
                            done.append((fresh, delay, pids, lat))
                    time.sleep(2.0)
                finally:
                    agent.stop()
                recorded = {r["pid"] for r in records(jsonl) if r.get("role") == "client"}
                all_lat = []
                for fresh, delay, pids, lat in done:
                    name = ("comm_" if scope == "comm" else "") + ("fresh" if fresh else "host")
                    missed = sum(1 for p in pids if p not in recorded)
                    summary[f"missed_{name}_{delay}ms"] = missed
                    print(f"{binary} {name:10} delay {delay:3} ms: {missed}/{len(pids)} missed",
                          flush=True)
                    if fresh:
                        all_lat += lat
                if all_lat:
                    key = "comm_" if scope == "comm" else ""
                    summary[f"{key}hint_to_probes_p50_ms"] = round(statistics.median(all_lat), 2)
                    summary[f"{key}hint_to_probes_p90_ms"] = round(pct(all_lat, 0.9), 2)
                    summary[f"{key}hint_to_probes_max_ms"] = round(max(all_lat), 2)
                    print(f"{binary} {scope}: hint to probes, {len(all_lat)} fresh runs: p50 "
                          f"{statistics.median(all_lat):.1f} ms, p90 {pct(all_lat, 0.9):.1f} ms, "
                          f"max {max(all_lat):.1f} ms", flush=True)
            bench_json(summary)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
