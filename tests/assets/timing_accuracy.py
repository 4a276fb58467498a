#!/usr/bin/env python3
"""Measures how far llmprobe's ttft_s and tpot_s are from the test server's injected timings.

Usage (as root, after `cargo xtask build`; the venv comes from `cargo xtask test`):
    timing_accuracy.py [--calls 10] [--ttft-ms 300] [--gap-ms 40] [--chunks 8]

Runs the agent, the test server over TLS and plain HTTP, and each client (Python openai SDK,
curl, node fetch) `--calls` times, then prints per client and transport the error of ttft_s
against the injected time to first chunk and of tpot_s against the injected inter-chunk gap
(mean, p50, max, in milliseconds; positive = llmprobe measured more than was injected).
"""
import argparse, json, os, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.path.join(ROOT, "tests", "assets")
PY = os.path.join(ROOT, "target", "e2e-venv", "bin", "python")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--ttft-ms", type=int, default=300)
    ap.add_argument("--gap-ms", type=int, default=40)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--dialects", action="store_true",
                    help="also every other dialect (httpx presets, the anthropic SDK), 2 reasoning chunks where the API has them")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="llmprobe-timing-")
    subprocess.run(["bash", os.path.join(ASSETS, "gen_cert.sh"), tmp], check=True, capture_output=True)
    ca, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    servers = {}
    for kind in ("tls", "plain"):
        args = [sys.executable, os.path.join(ASSETS, "llm_server.py"), "--port", "0", "--ttft-ms", str(a.ttft_ms),
                "--gap-ms", str(a.gap_ms), "--chunks", str(a.chunks)]
        if kind == "tls":
            args += ["--tls-cert", ca, "--tls-key", key]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        servers[kind] = (p, int(p.stdout.readline().split()[1]))
    out = os.path.join(tmp, "records.jsonl")
    agent = subprocess.Popen([os.path.join(ROOT, "target", "release", "llmprobe"), "run", "--jsonl", out,
                              "--metrics-addr", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    for line in agent.stderr:
        if "ready:" in line:
            break
    env = dict(os.environ, OPENAI_API_KEY="sk-timing", NODE_EXTRA_CA_CERTS=ca)
    pids = {}
    try:
        for kind in ("tls", "plain"):
            port = servers[kind][1]
            url = f"https://localhost:{port}/v1" if kind == "tls" else f"http://127.0.0.1:{port}/v1"
            body = json.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": True},
                               "messages": [{"role": "user", "content": "hi"}]})
            clients = {
                "python-openai": [PY, os.path.join(ASSETS, "clients", "openai_client.py"), "--base-url", url,
                                  "--stream", "--include-usage", "--calls", str(a.calls)] + (["--ca", ca] if kind == "tls" else []),
                "node-fetch": ["node", os.path.join(ASSETS, "clients", "node_fetch.mjs"), "--url", url, "--model", "m",
                               "--stream", "--include-usage", "--calls", str(a.calls)],
            }
            for name, cmd in clients.items():
                p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
                p.wait()
                pids[p.pid] = (name, kind)
            if a.dialects:
                base = url[:-3]
                ca_args = ["--ca", ca] if kind == "tls" else []
                for d in ("gemini", "gemini-array", "ollama", "ollama-generate", "dashscope", "responses", "completions"):
                    for _ in range(a.calls):
                        p = subprocess.Popen([PY, os.path.join(ASSETS, "clients", "http_client.py"), "--url", base,
                                              "--dialect", d, "--model", "m", "--stream",
                                              "--header", "x-test-reasoning-chunks=2"] + ca_args,
                                             env=env, stdout=subprocess.DEVNULL)
                        p.wait()
                        pids[p.pid] = (f"httpx {d}", kind)
                p = subprocess.Popen([PY, os.path.join(ASSETS, "clients", "anthropic_client.py"), "--base-url", base,
                                      "--stream", "--thinking", "2", "--calls", str(a.calls)] + ca_args,
                                     env=env, stdout=subprocess.DEVNULL)
                p.wait()
                pids[p.pid] = ("anthropic-sdk", kind)
            for _ in range(a.calls):
                cmd = ["curl", "-s", "-N", "-H", "content-type: application/json", "-d", body, f"{url}/chat/completions"]
                if kind == "tls":
                    cmd[1:1] = ["--cacert", ca]
                p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
                p.wait()
                pids[p.pid] = ("curl", kind)
        time.sleep(1.0)
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait()
        for p, _ in servers.values():
            p.kill()
    groups = {}
    for line in open(out):
        r = json.loads(line)
        key = pids.get(r["pid"]) if r["role"] == "client" else (f"server {r['api']}", "tls" if r["tls"] else "plain")
        if key is None or r["ttft_s"] is None:
            continue
        g = groups.setdefault(key, {"ttft": [], "tpot": []})
        g["ttft"].append((r["ttft_s"] * 1000) - a.ttft_ms)
        if r["reasoning_s"] is not None:
            g.setdefault("reasoning", []).append((r["reasoning_s"] * 1000) - 2 * a.gap_ms)
        if r["tpot_s"] is not None:
            g["tpot"].append((r["tpot_s"] * 1000) - a.gap_ms)
    print(f"injected: ttft {a.ttft_ms} ms, gap {a.gap_ms} ms, {a.chunks} chunks; error in ms (measured - injected)")
    print(f"{'client':38} {'transport':9} {'n':>3}  {'ttft mean':>9} {'p50':>7} {'max':>7}   {'tpot mean':>9} {'p50':>7} {'max':>7}   {'reasoning_s mean':>16}")
    for (name, kind), g in sorted(groups.items()):
        t, p = g["ttft"], g["tpot"] or [float("nan")]
        rs = f"{statistics.mean(g['reasoning']):16.2f}" if g.get("reasoning") else f"{'-':>16}"
        print(f"{name:38} {kind:9} {len(t):>3}  {statistics.mean(t):9.2f} {statistics.median(t):7.2f} {max(t):7.2f}"
              f"   {statistics.mean(p):9.2f} {statistics.median(p):7.2f} {max(p):7.2f}   {rs}")


if __name__ == "__main__":
    main()
