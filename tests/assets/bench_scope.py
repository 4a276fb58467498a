#!/usr/bin/env python3
"""Benchmark: what llmprobe's scope costs processes it does not trace, and what auto mode catches.

Usage (as root, after `cargo xtask build`):
    bench_scope.py [--agent PATH]... [--pairs 3] [--iterations 20000] [--auto-clients 10] [--quick]

The out-of-scope workload is an OpenSSL loop (tls_loop.py --mode echo: SSL_write + SSL_read of
64 bytes, `--iterations` times, over loopback TCP to a local TLS echo server, server name
`www.example.org`), run under the system python3 through a symlink named `bench-oos`. Each pair
runs it once without an agent (the baseline) and once under each configuration, in this script,
on this machine:

  scoped   llmprobe run --comm bench-in: the loop is out of scope (goal: <= 1.05x) while an
           in-scope client (`bench-in`) makes streamed chat calls over TLS that must be recorded;
  all      llmprobe run (no selector): the loop is probed (the in-scope cost, for comparison);
  auto     llmprobe run --scope auto --llm-host llm.bench.test: the loop is a non-LLM TLS process.

Then auto mode's catch share: `--auto-clients` fresh processes each make two calls (0.5 s apart)
with server name llm.bench.test through a proxy adding 20 ms each way; the share of first and of
second calls recorded is reported.

Prints the figures and, last, one line `BENCH_JSON {...}` for `cargo xtask bench`.
"""
import argparse, json, os, signal, socket, ssl, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.path.join(ROOT, "tests", "assets")
TLS_LOOP = os.path.join(ASSETS, "clients", "tls_loop.py")
PY = "/usr/bin/python3"


def certs():
    d = os.path.join(tempfile.gettempdir(), "llmprobe-test-certs")
    subprocess.run(["bash", os.path.join(ASSETS, "gen_cert.sh"), d], check=True)
    return os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")


def echo_server(cert, key):
    """A threaded TLS echo server on loopback; returns its port."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)

    def serve(c):
        try:
            s = ctx.wrap_socket(c, server_side=True)
            while True:
                d = s.recv(65536)
                if not d:
                    break
                s.sendall(d)
        except Exception:
            pass

    def accept():
        while True:
            c, _ = ls.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return ls.getsockname()[1]


def start(cmd, **kw):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **kw)
    line = p.stdout.readline()
    assert line.startswith("LISTENING "), f"{cmd}: {line!r}"
    return p, int(line.split()[1])


def named(d, name):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        os.symlink(PY, p)
    return p


def loop_seconds(exe, port, n):
    out = subprocess.run([exe, TLS_LOOP, "--mode", "echo", "--port", str(port), "--sni", "www.example.org",
                          "--calls", str(n)], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


class Agent:
    def __init__(self, binary, args, d):
        self.jsonl = os.path.join(d, f"records-{time.monotonic_ns()}.jsonl")
        self.log = open(os.path.join(d, "agent.log"), "a", buffering=1)
        self.p = subprocess.Popen([binary, "run", "--jsonl", self.jsonl, "--metrics-addr", "127.0.0.1:0"] + args,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in self.p.stderr:
            self.log.write(line)
            if "ready:" in line:
                break
            if "ERROR" in line or "Error" in line:
                raise SystemExit(f"agent failed: {line}")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.p.stderr:
            self.log.write(line)

    def records(self):
        try:
            return [json.loads(l) for l in open(self.jsonl) if l.strip()]
        except FileNotFoundError:
            return []

    def stop(self):
        self.p.send_signal(signal.SIGINT)
        self.p.wait()


def supports_scope(binary):
    """Whether this agent has the scope selectors (an older baseline has not)."""
    out = subprocess.run([binary, "run", "--help"], capture_output=True, text=True).stdout
    return "--comm" in out and "--scope" in out


def auto_share(binary, d, llm_port, clients):
    """Auto mode's catch share over 20 ms each way: `clients` fresh processes, two calls each."""
    proxy, proxy_port = start([PY, os.path.join(ASSETS, "delay_proxy.py"), "--target", str(llm_port),
                               "--delay-ms", "20"])
    agent = Agent(binary, ["--scope", "auto", "--llm-host", "llm.bench.test"], d)
    talker = named(d, "bench-llm")
    pids = []
    for _ in range(clients):
        out = subprocess.run([talker, TLS_LOOP, "--port", str(proxy_port), "--sni", "llm.bench.test",
                              "--calls", "2", "--gap", "0.5"], capture_output=True, text=True, check=True).stdout
        pids.append(json.loads(out.strip().splitlines()[-1])["pid"])
    time.sleep(2)
    recs = agent.records()
    counts = [sum(1 for r in recs if r.get("pid") == p and r.get("role") == "client") for p in pids]
    agent.stop()
    proxy.kill()
    admissions = []
    for line in open(os.path.join(d, "agent.log")):
        if "admitted pid" in line and "llm.bench.test" in line and " in perf_event_open" in line:
            admissions.append(int(line.split(" attached in ")[1].split()[0]))
    first = sum(1 for c in counts if c >= 2) / len(counts)
    second = sum(1 for c in counts if c >= 1) / len(counts)
    return first, second, (statistics.median(admissions) if admissions else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", action="append", default=[],
                    help="agent binary (repeatable; an agent without selectors runs `all` only)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--auto-clients", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="1 pair, 5000 iterations, 5 auto clients")
    a = ap.parse_args()
    if a.quick:
        a.pairs, a.iterations, a.auto_clients = 1, 5000, 5
    agents = a.agent or [os.path.join(ROOT, "target", "release", "llmprobe")]
    cert, key = certs()
    d = tempfile.mkdtemp(prefix="llmprobe-bench-scope-")
    echo_port = echo_server(cert, key)
    llm, llm_port = start([PY, os.path.join(ASSETS, "llm_server.py"), "--port", "0", "--ttft-ms", "0",
                           "--gap-ms", "5", "--chunks", "8", "--tls-cert", cert, "--tls-key", key])
    oos = named(d, "bench-oos")
    inside = named(d, "bench-in")
    configs = {
        "scoped": ["--comm", "bench-in"],
        "all": [],
        "auto": ["--scope", "auto", "--llm-host", "llm.bench.test"],
    }
    scoped_ok = {b: supports_scope(b) for b in agents}
    ratios = {b: {k: [] for k in configs} for b in agents}
    base_all = []
    in_scope_recorded = {b: 0 for b in agents}
    for pair in range(a.pairs):
        for b in agents:
            for name, args in configs.items():
                if name != "all" and not scoped_ok[b]:
                    continue
                base = loop_seconds(oos, echo_port, a.iterations)
                base_all.append(base)
                agent = Agent(b, args, d)
                client = None
                if name == "scoped":
                    # The in-scope client calls all through the measured run.
                    client = subprocess.Popen([inside, TLS_LOOP, "--port", str(llm_port), "--calls", "1000000",
                                               "--gap", "0.05", "--sleep-before", "1"],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1.5)
                t = loop_seconds(oos, echo_port, a.iterations)
                if client:
                    client.kill()
                    client.wait()
                    time.sleep(0.5)
                    recs = [r for r in agent.records() if r.get("pid") == client.pid and r.get("role") == "client"]
                    in_scope_recorded[b] += len(recs)
                    oos_recs = [r for r in agent.records() if r.get("comm") == "bench-oos"]
                    assert not oos_recs, "the out-of-scope loop was recorded"
                    assert recs, "the in-scope client's calls were not recorded"
                agent.stop()
                ratios[b][name].append(t / base)
                print(f"pair {pair} {os.path.basename(os.path.dirname(b)) or b} {name:6}: loop {t:.3f} s vs "
                      f"{base:.3f} s unprobed (x{t / base:.3f})", flush=True)
    for b in agents:
        summary = {"bench": "scope", "agent": b, "iterations": a.iterations, "pairs": a.pairs,
                   "baseline_loop_s": statistics.median(base_all),
                   "in_scope_ratio": statistics.median(ratios[b]["all"])}
        print(f"{b}: out-of-scope OpenSSL loop ({a.iterations} SSL_write+SSL_read pairs), median of {a.pairs}:")
        print(f"  all processes probed (no selector): x{summary['in_scope_ratio']:.3f}")
        if scoped_ok[b]:
            first, second, adm = auto_share(b, d, llm_port, a.auto_clients)
            summary.update({
                "out_of_scope_ratio": statistics.median(ratios[b]["scoped"]),
                "auto_non_llm_ratio": statistics.median(ratios[b]["auto"]),
                "in_scope_calls_recorded": in_scope_recorded[b],
                "auto_first_call_share": first,
                "auto_second_call_share": second,
                "auto_admission_us_median": adm,
            })
            print(f"  scoped (--comm bench-in, in-scope client recorded: {in_scope_recorded[b]} calls): "
                  f"x{summary['out_of_scope_ratio']:.3f} (goal <= 1.05)")
            print(f"  --scope auto, non-LLM server name: x{summary['auto_non_llm_ratio']:.3f}")
            print(f"  --scope auto over 20 ms each way, {a.auto_clients} fresh clients: first calls caught "
                  f"{first:.0%}, second calls {second:.0%}; admission median {adm} us")
        else:
            print("  (no scope selectors in this agent)")
        print("BENCH_JSON " + json.dumps(summary), flush=True)
    llm.kill()


if __name__ == "__main__":
    main()
