"""What the live benchmarks share: a running agent, the local test server, /proc readings, and
the `BENCH_JSON {...}` line that `cargo xtask bench` collects.

Every benchmark prints, last, one `BENCH_JSON {...}` line per agent it measured: an object with
"bench" (its name), "agent" (the binary's path) and its figures as numbers (nested objects are
flattened by the collector into dotted names; strings are kept as notes). Units are in the
figures' names (`_s`, `_mib`, `_per_s`, `_ratio`, ...).
"""
import json
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.path.join(ROOT, "tests", "assets")
DEFAULT_AGENT = os.path.join(ROOT, "target", "release", "llmprobe")


def need_root(script):
    if os.geteuid() != 0:
        sys.exit(f"{script}: the agent loads eBPF programs and attaches probes: run this benchmark "
                 "as root (e.g. sudo -E), or leave it out (cargo xtask bench --only replay)")


def bench_json(obj):
    print("BENCH_JSON " + json.dumps(obj, sort_keys=False), flush=True)


def raise_fd_limit(n=65536):
    """Room for thousands of sockets, here and in the processes started from here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(n, hard) if os.geteuid() != 0 else max(n, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        pass


def certs(tmp):
    subprocess.run(["bash", os.path.join(ASSETS, "gen_cert.sh"), tmp], check=True,
                   capture_output=True)
    return os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")


class Server:
    """tests/assets/llm_server.py on a free port (TLS when cert/key are given)."""

    def __init__(self, *args, cert=None, key=None):
        cmd = [sys.executable, os.path.join(ASSETS, "llm_server.py"), "--port", "0", *args]
        if cert:
            cmd += ["--tls-cert", cert, "--tls-key", key]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING"):
            self.proc.kill()
            raise RuntimeError(f"llm_server.py did not start: {line!r}")
        self.port = int(line.split()[1])
        self.tls = cert is not None

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def proc_status(pid):
    """VmRSS and VmHWM of pid, KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_flags(binary):
    """The `run` options this binary knows (a baseline may predate some)."""
    out = subprocess.run([binary, "run", "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]+)", out))


class Agent:
    """`llmprobe run` until stop(): waits for its "ready" line; stderr is drained on a thread (a
    full pipe would block the agent) and kept for errors."""

    def __init__(self, binary, *args, jsonl="none", ready_timeout=60):
        self.binary = binary
        # A free port picked here: the ready line names the configured address, not the bound one.
        port = free_port()
        self.proc = subprocess.Popen([binary, "run", "--jsonl", jsonl, "--metrics-addr",
                                      f"127.0.0.1:{port}", *args], stderr=subprocess.PIPE, text=True)
        self.log = []
        self.metrics_url = None
        ready = threading.Event()

        def drain():
            for line in self.proc.stderr:
                self.log.append(line)
                if len(self.log) > 200:
                    del self.log[:100]
                if "ready:" in line and not ready.is_set():
                    m = re.search(r"metrics on (http://\S+/metrics)", line)
                    self.metrics_url = m.group(1) if m else None
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(ready_timeout) or self.proc.poll() is not None:
            self.proc.kill()
            raise RuntimeError(f"{binary} did not become ready:\n" + "".join(self.log[-20:]))
        self.pid = self.proc.pid
        self.cpu0 = cpu_seconds(self.pid)

    def metrics(self):
        """Samples of /metrics: {"name{labels}": value}, plus {"name": sum over labels}."""
        out = {}
        if not self.metrics_url:
            return out
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            try:
                v = float(value)
            except ValueError:
                continue
            out[name] = v
            base = name.split("{", 1)[0]
            if base != name:
                out[base] = out.get(base, 0.0) + v
        return out

    def cpu(self):
        return cpu_seconds(self.pid) - self.cpu0

    def status(self):
        return proc_status(self.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def client_ssl(ca):
    ctx = ssl.create_default_context(cafile=ca)
    return ctx


def t95(n):
    """Two-sided 95 % Student t quantile for n - 1 degrees of freedom."""
    table = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
             10: 2.23, 12: 2.18, 15: 2.13, 20: 2.09, 30: 2.04}
    df = max(1, n - 1)
    for k in sorted(table):
        if df <= k:
            return table[k]
    return 1.96


def mean_ci(xs):
    """Mean and half-width of its 95 % confidence interval."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, float("nan")
    sd = (sum((x - m) ** 2 for x in xs) / (n - 1)) ** 0.5
    return m, t95(n) * sd / n ** 0.5


def wait_quiet(seconds=0.5):
    time.sleep(seconds)
