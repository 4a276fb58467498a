#!/usr/bin/env python3
"""GPU correlation check for a node with an NVIDIA GPU (`cargo xtask gpu-check` runs it).

Runs the llmprobe release binary built beforehand, then a local OpenAI-compatible server whose
tokens a tiny random-weight transformer generates on the GPU in a worker process
(gpu_llm_server.py), drives concurrent streamed calls at it, and checks:
- the GPU metrics are there and non-zero (utilization, power, memory; llmprobe_gpu_available 1);
- the server's GPU process (the worker, a child of the HTTP process) is joined with the server's
  calls: server-role records carry gpu_util_mean / gpu_mem_used_bytes / gpu_power_mean_w;
- llmprobe_gpu_energy_joules_per_output_token of the server and model is finite and positive,
  and so are llmprobe_gpu_output_tokens_per_second and the in-flight utilization.

Needs root (eBPF), python3 with PyTorch and CUDA. Sized to finish in about a minute.
`--fake` runs the same flow without a GPU or PyTorch (the worker sleeps per step) and checks the
opposite: llmprobe_gpu_available 0 and no GPU fields, for a dry run of the script itself.

    sudo python3 tests/assets/gpu_check.py --agent target/release/llmprobe --out /tmp/gpu-check
"""

import argparse
import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    """All samples of /metrics: [(name, {label: value}, float)]."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SERIES.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            pass
    return out


def values(samples, name, **want):
    return [v for n, l, v in samples if n == name and all(l.get(k) == w for k, w in want.items())]


def stream_call(port, max_tokens):
    """One streamed chat call; returns the number of content chunks received."""
    body = json.dumps(
        {
            "model": "tiny-random-gpu",
            "messages": [{"role": "user", "content": "Tell me about GPUs and tokens"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
        }
    )
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request(
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-gpu-check-not-a-key"},
    )
    r = c.getresponse()
    chunks = 0
    for line in r:
        if line.startswith(b"data: ") and b'"content": " w' in line:
            chunks += 1
    c.close()
    return chunks


class Check:
    def __init__(self):
        self.failures = []
        self.lines = []

    def ok(self, cond, what):
        self.lines.append(("PASS " if cond else "FAIL ") + what)
        print(self.lines[-1], flush=True)
        if not cond:
            self.failures.append(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", default=os.path.join(HERE, "..", "..", "target", "release", "llmprobe"))
    ap.add_argument("--out", default="/tmp/llmprobe-gpu-check")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--fake", action="store_true", help="no PyTorch: the model worker sleeps per step")
    ap.add_argument("--device", default="cuda", help="torch device of the model (cpu: a dry run)")
    ap.add_argument(
        "--fake-nvml",
        metavar="LIB",
        help="a stand-in NVML (fake_nvml.c) for the agent; the worker is its only GPU process",
    )
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    t_start = time.time()
    check = Check()

    agent_port = free_port()
    jsonl = os.path.join(a.out, "records.jsonl")
    if os.path.exists(jsonl):
        os.remove(jsonl)
    agent_log = open(os.path.join(a.out, "agent.log"), "w")
    agent_cmd = [a.agent, "run", "--jsonl", jsonl, "--metrics-addr", f"127.0.0.1:{agent_port}", "--gpu-interval", "0.5"]
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")}
    pids_file = os.path.join(a.out, "gpu-pids")
    open(pids_file, "w").close()
    if a.fake_nvml:
        agent_cmd += ["--nvml-lib", a.fake_nvml]
        env["FAKE_NVML_PIDS_FILE"] = pids_file
    expect_gpu = bool(a.fake_nvml) or (not a.fake and a.device != "cpu")
    agent = subprocess.Popen(agent_cmd, stdout=agent_log, stderr=subprocess.STDOUT, env=env)
    server = None
    try:
        deadline = time.time() + 60
        while True:
            log = open(os.path.join(a.out, "agent.log")).read()
            if "ready:" in log:
                break
            if agent.poll() is not None or time.time() > deadline:
                print(log[-3000:])
                raise SystemExit("llmprobe did not start (see agent.log above)")
            time.sleep(0.2)
        gpu_line = next((l for l in log.splitlines() if "GPU" in l or "NVML" in l), "(no GPU line)")
        print("agent:", gpu_line.strip(), flush=True)

        server_port = free_port()
        cmd = [sys.executable, os.path.join(HERE, "gpu_llm_server.py"), "--port", str(server_port)]
        if a.fake:
            cmd.append("--fake")
        else:
            cmd += ["--device", a.device]
            if a.device == "cpu":
                cmd += ["--layers", "2", "--width", "256"]
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(a.out, "server.log"), "w"))
        ready = server.stdout.readline().decode().split()
        if len(ready) != 4 or ready[0] != "READY":
            raise SystemExit(f"the GPU server did not start: {ready!r} (see server.log)")
        server_pid, worker_pid = int(ready[2]), int(ready[3])
        with open(pids_file, "w") as f:
            f.write(f"{worker_pid}\n")
        print(f"server: HTTP pid {server_pid}, model worker pid {worker_pid}, port {server_port}", flush=True)

        # Idle first (the idle utilization), then load.
        time.sleep(2)
        load_start = time.time()
        stop = load_start + a.duration
        calls, chunks, errors = [0], [0], []
        lock = threading.Lock()

        def client():
            while time.time() < stop:
                try:
                    n = stream_call(server_port, a.max_tokens)
                    with lock:
                        calls[0] += 1
                        chunks[0] += n
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))
                    time.sleep(0.5)

        threads = [threading.Thread(target=client) for _ in range(a.concurrency)]
        for t in threads:
            t.start()
        peak = {}
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            try:
                s = scrape(agent_port)
            except OSError:
                continue
            for name in (
                "llmprobe_gpu_sm_utilization_percent",
                "llmprobe_gpu_power_watts",
                "llmprobe_gpu_memory_used_bytes",
            ):
                peak[name] = max([peak.get(name, 0.0)] + values(s, name))
            for v in values(s, "llmprobe_gpu_output_tokens_per_second", pid=str(server_pid)):
                peak["tokens_per_second"] = max(peak.get("tokens_per_second", 0.0), v)
            for v in values(s, "llmprobe_gpu_process_memory_used_bytes", pid=str(worker_pid)):
                peak["worker_mem"] = max(peak.get("worker_mem", 0.0), v)
        for t in threads:
            t.join()
        load_s = time.time() - load_start
        print(f"load: {calls[0]} calls, {chunks[0]} tokens streamed, {len(errors)} client errors", flush=True)
        # Windows settle 2 s after their end (plus one 0.5 s round); the records are written
        # when the calls end.
        time.sleep(4)
        final = scrape(agent_port)
        final_at = time.time()
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        agent.send_signal(signal.SIGINT)
        try:
            agent.wait(20)
        except subprocess.TimeoutExpired:
            agent.kill()
        agent_log.close()

    records = []
    with open(jsonl) as f:
        for line in f:
            records.append(json.loads(line))
    srv = [r for r in records if r["role"] == "server" and r["pid"] == server_pid]
    cli = [r for r in records if r["role"] == "client"]
    check.ok(calls[0] > 0 and not errors, f"{calls[0]} streamed calls completed without client errors")
    check.ok(len(srv) >= calls[0] * 0.9, f"{len(srv)} server-role records for {calls[0]} calls (pid {server_pid})")
    check.ok(len(cli) >= calls[0] * 0.9, f"{len(cli)} client-role records for {calls[0]} calls")
    out_tokens = sum(r.get("output_tokens") or 0 for r in srv)
    check.ok(out_tokens == chunks[0], f"server records count {out_tokens} output tokens, {chunks[0]} streamed")
    with_gpu = [r for r in srv if r.get("gpu_util_mean") is not None]
    pid = str(server_pid)
    jpt = values(final, "llmprobe_gpu_energy_joules_per_output_token", pid=pid)
    tps = values(final, "llmprobe_gpu_output_tokens_per_second", pid=pid)
    busy = values(final, "llmprobe_gpu_server_sm_utilization_percent", pid=pid, state="in_flight")
    idle = values(final, "llmprobe_gpu_server_sm_utilization_percent", pid=pid, state="idle")
    energy = values(final, "llmprobe_gpu_output_token_energy_joules_total", pid=pid)
    avail = values(final, "llmprobe_gpu_available")
    unaccounted = sum(values(final, "llmprobe_gpu_output_tokens_unaccounted_total"))
    summary = {
        "calls": calls[0],
        "tokens_streamed": chunks[0],
        "server_records": len(srv),
        "server_records_with_gpu": len(with_gpu),
        "gpu_util_mean_of_calls": sum(r["gpu_util_mean"] for r in with_gpu) / len(with_gpu) if with_gpu else None,
        "gpu_power_mean_w_of_calls": sum(r["gpu_power_mean_w"] or 0 for r in with_gpu) / len(with_gpu)
        if with_gpu
        else None,
        "peak": peak,
        "joules_per_output_token": jpt,
        "output_tokens_per_second": tps,
        "token_energy_joules_total": energy,
        "sm_util_in_flight": busy,
        "sm_util_idle": idle,
        "tokens_unaccounted": unaccounted,
        "elapsed_s": round(time.time() - t_start, 1),
    }
    summary["load_s"] = round(load_s, 2)
    if not expect_gpu:
        check.ok(avail == [0.0], "no NVML: llmprobe_gpu_available 0")
        check.ok(not with_gpu, "no NVML: server records carry no GPU fields")
        check.ok(not jpt and not tps, "no NVML: no efficiency series")
    else:
        check.ok(avail == [1.0], "llmprobe_gpu_available 1")
        check.ok(peak.get("llmprobe_gpu_sm_utilization_percent", 0) > 0, "GPU SM utilization seen above 0")
        check.ok(peak.get("llmprobe_gpu_power_watts", 0) > 0, "GPU power above 0")
        check.ok(peak.get("llmprobe_gpu_memory_used_bytes", 0) > 0, "GPU memory used above 0")
        check.ok(peak.get("worker_mem", 0) > 0, f"the model worker (pid {worker_pid}) is a GPU process")
        check.ok(
            len(with_gpu) >= len(srv) * 0.9 and len(srv) > 0,
            f"{len(with_gpu)}/{len(srv)} server records joined with the worker's GPU",
        )
        check.ok(
            all((r.get("gpu_power_mean_w") or 0) > 0 and (r.get("gpu_mem_used_bytes") or 0) > 0 for r in with_gpu),
            "joined records have power and memory above 0",
        )
        check.ok(
            len(jpt) == 1 and math.isfinite(jpt[0]) and jpt[0] > 0,
            f"energy per output token finite and positive: {jpt}",
        )
        check.ok(
            peak.get("tokens_per_second", 0) > 0,
            f"output tokens per second under load: {peak.get('tokens_per_second')}",
        )
        check.ok(len(energy) == 1 and energy[0] > 0, f"energy charged to tokens: {energy}")
        check.ok(len(busy) == 1 and busy[0] > 0, f"SM utilization in flight {busy}, idle {idle}")
        check.ok(
            unaccounted <= 0.02 * max(out_tokens, 1),
            f"{unaccounted:.0f} of {out_tokens} output tokens left out of the energy accounting",
        )
        if a.fake_nvml:
            # The stand-in draws a known power: the energy charged to tokens is that power over
            # the windows with output (the load, give or take a window at each end).
            w = float(os.environ.get("FAKE_NVML_WATTS", "250"))
            want = w * load_s
            check.ok(
                len(energy) == 1 and 0.8 * want <= energy[0] <= 1.2 * want,
                f"energy charged {energy} J within 20% of {w} W x {load_s:.1f} s = {want:.0f} J",
            )
            # The gauge covers the settled windows of the last minute since the server's first
            # call: at the end, every token over the time since the load started, less the
            # ~2.25 s not yet settled (2 s grace, half a 0.5 s round).
            span = min(60.0, final_at - 2.25 - load_start)
            want_tps = chunks[0] / span
            check.ok(
                len(tps) == 1 and 0.6 * want_tps <= tps[0] <= 1.4 * want_tps,
                f"final tokens/s {tps} near {chunks[0]} tokens / {span:.1f} s = {want_tps:.0f}",
            )
            check.ok(
                all(abs(r["gpu_util_mean"] - 60) < 1e-6 and abs(r["gpu_power_mean_w"] - w) < 1e-6 for r in with_gpu),
                "joined records carry the stand-in's 60 % and its power",
            )
        client_joined = [r for r in cli if r.get("gpu_util_mean") is not None]
        check.ok(not client_joined, "client-role records carry no GPU fields")
    secret = any("sk-gpu-check-not-a-key" in open(os.path.join(a.out, f)).read() for f in ("records.jsonl", "agent.log"))
    check.ok(not secret, "the API key is in no record or log")
    summary["result"] = "FAIL" if check.failures else "PASS"
    summary["checks"] = check.lines
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
