#!/usr/bin/env python3
"""A small OpenSSL client for the scope tests and benchmark (standard library only, so it runs
under any python3, as any user, under any executable name).

    tls_loop.py --port P [--sni HOST] [--calls N] [--path /v1/chat/completions] [--mode http|echo]
                [--bytes 64] [--start-gate FILE]

http: N streamed chat completions on one keep-alive connection to the test LLM server.
echo: N SSL_write + SSL_read pairs of --bytes each against an echo server (bench_scope.py).
The server name sent in the ClientHello is --sni (certificates are not checked: the test
server's name is localhost). Prints one JSON line: pid, calls, seconds.
"""
import argparse, http.client, json, os, socket, ssl, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--sni", default="localhost")
ap.add_argument("--calls", type=int, default=1)
ap.add_argument("--mode", choices=["http", "echo"], default="http")
ap.add_argument("--bytes", type=int, default=64)
ap.add_argument("--start-gate", help="wait until this file exists before connecting")
ap.add_argument("--sleep-before", type=float, default=0.0)
ap.add_argument("--gap", type=float, default=0.0, help="seconds between calls")
ap.add_argument("--hold", type=float, default=0.0, help="stay alive this long after the calls")
a = ap.parse_args()

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if a.start_gate:
    while not os.path.exists(a.start_gate):
        time.sleep(0.01)
time.sleep(a.sleep_before)

t0 = time.perf_counter()
if a.mode == "http":
    class Conn(http.client.HTTPSConnection):
        def connect(self):
            sock = socket.create_connection((self.host, self.port))
            self.sock = ctx.wrap_socket(sock, server_hostname=a.sni)
    conn = Conn(a.host, a.port)
    body = json.dumps({"model": "scope-test", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]})
    for i in range(a.calls):
        if i:
            time.sleep(a.gap)
        conn.request("POST", "/v1/chat/completions", body,
                     {"content-type": "application/json", "authorization": "Bearer sk-scope"})
        r = conn.getresponse()
        r.read()
    conn.close()
else:
    s = ctx.wrap_socket(socket.create_connection((a.host, a.port)), server_hostname=a.sni)
    msg = b"x" * a.bytes
    for _ in range(a.calls):
        s.sendall(msg)
        got = 0
        while got < len(msg):
            d = s.recv(len(msg) - got)
            if not d:
                sys.exit("echo server closed")
            got += len(d)
    s.close()
print(json.dumps({"pid": os.getpid(), "calls": a.calls, "seconds": time.perf_counter() - t0}),
      flush=True)
time.sleep(a.hold)
