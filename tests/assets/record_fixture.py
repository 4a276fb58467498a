#!/usr/bin/env python3
"""Records a replay fixture through the real probes.

Usage (as root, after `cargo xtask build`):
    record_fixture.py NAME -- CLIENT COMMAND...

Starts the test LLM server (TLS when the client URL placeholder {tls_url} is used, plain for
{plain_url}), starts `llmprobe record`, runs the client, stops the agent, and keeps only the
events of the client and server processes in tests/fixtures/NAME.capture.jsonl. The golden
records are then made by `LLMPROBE_UPDATE_GOLDEN=1 cargo test --test replay`.
Placeholders in the client command: {tls_url} {plain_url} (with /v1), {tls_base} {plain_base}
(scheme://host:port), {asgi_url} (with asgi=1: the FastAPI/uvicorn server), {ca} {python}. Options before `--`:
ttft=MS gap=MS chunks=N (server timings), comms=a,b (also keep processes with these names, for
clients started through a shell).
"""
import json, os, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.path.join(ROOT, "tests", "assets")


def main():
    name = sys.argv[1]
    cmd = sys.argv[sys.argv.index("--") + 1:]
    opts = dict(a.split("=", 1) for a in sys.argv[2:sys.argv.index("--")])
    tmp = tempfile.mkdtemp(prefix="llmprobe-fixture-")
    subprocess.run(["bash", os.path.join(ASSETS, "gen_cert.sh"), tmp], check=True, capture_output=True)
    ca = os.path.join(tmp, "cert.pem")
    servers = {}
    for kind in ("tls", "plain"):
        args = [sys.executable, os.path.join(ASSETS, "llm_server.py"), "--port", "0",
                "--ttft-ms", opts.get("ttft", "150"), "--gap-ms", opts.get("gap", "30"), "--chunks", opts.get("chunks", "4")]
        if kind == "tls":
            args += ["--tls-cert", ca, "--tls-key", os.path.join(tmp, "key.pem")]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        port = int(p.stdout.readline().split()[1])
        servers[kind] = (p, port)
    if opts.get("asgi") == "1":
        py = os.path.join(ROOT, "target", "e2e-venv", "bin", "python")
        p = subprocess.Popen([py, os.path.join(ASSETS, "asgi_server.py"), "--port", "0", "--ttft-ms", opts.get("ttft", "150"),
                              "--gap-ms", opts.get("gap", "30"), "--chunks", opts.get("chunks", "4")],
                             stdout=subprocess.PIPE, text=True)
        servers["asgi"] = (p, int(p.stdout.readline().split()[1]))
    cap = os.path.join(tmp, "capture.jsonl")
    agent = subprocess.Popen([os.path.join(ROOT, "target", "release", "llmprobe"), "record", "--out", cap,
                              "--jsonl", "none", "--metrics-addr", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    for line in agent.stderr:
        if "ready:" in line:
            break
    fill = {"tls_url": f"https://localhost:{servers['tls'][1]}/v1", "plain_url": f"http://127.0.0.1:{servers['plain'][1]}/v1",
            "tls_base": f"https://localhost:{servers['tls'][1]}", "plain_base": f"http://127.0.0.1:{servers['plain'][1]}",
            "asgi_url": f"http://127.0.0.1:{servers['asgi'][1]}/v1" if "asgi" in servers else "",
            "ca": ca, "python": os.path.join(ROOT, "target", "e2e-venv", "bin", "python")}
    env = dict(os.environ, OPENAI_API_KEY="sk-test-secret-do-not-leak-4242", NODE_EXTRA_CA_CERTS=ca)
    def expand(arg):
        for k, v in fill.items():
            arg = arg.replace("{" + k + "}", v)
        return arg
    try:
        client = subprocess.Popen([expand(c) for c in cmd], env=env, stdout=subprocess.DEVNULL)
        client.wait()
        time.sleep(1.0)
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait()
        for p, _ in servers.values():
            p.kill()
    comms = set(filter(None, opts.get("comms", "").split(",")))
    keep = {client.pid} | {p.pid for p, _ in servers.values()}
    out = os.path.join(ROOT, "tests", "fixtures", f"{name}.capture.jsonl")
    n = 0
    with open(cap) as src, open(out, "w") as dst:
        for line in src:
            ev = json.loads(line)
            if ev["ev"] == "header" or ev.get("pid") in keep or ev.get("comm") in comms:
                dst.write(line)
                n += 1
    print(f"{out}: {n} events (client pid {client.pid})")


if __name__ == "__main__":
    main()
