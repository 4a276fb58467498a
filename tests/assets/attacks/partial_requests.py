#!/usr/bin/env python3
"""partial_requests.py --connections N --workers K --ports P

Opens N TCP connections to a local server of its own (P listening ports, each served by its own
process, so neither loopback ports nor one process's open-file limit run out), from K client
processes, and sends on each the head of an LLM request whose body never
comes. Prints "READY <opened>" once every connection is open, then holds them until stdin closes.
Run as an unprivileged user: the attack of 100k half-sent requests on the agent's tables.
"""
import argparse
import os
import selectors
import socket
import sys
import time

HEAD = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: partial\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        b"{\"model\":\"partial\",\"messages\":[")


def server(listener, stop_r):
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ)
    sel.register(stop_r, selectors.EVENT_READ)
    held = []
    while True:
        for key, _ in sel.select():
            if key.fileobj is stop_r:
                return
            while True:
                try:
                    c, _ = key.fileobj.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    time.sleep(0.01)
                    break
                held.append(c)


def client(ports, count, ready_w):
    socks = []
    for i in range(count):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", ports[i % len(ports)]))
            s.sendall(HEAD)
        except OSError:
            s.close()
            continue
        socks.append(s)
    os.write(ready_w, b"%d\n" % len(socks))
    sys.stdin.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--ports", type=int, default=8)
    a = ap.parse_args()
    listeners = []
    for _ in range(a.ports):
        l = socket.socket()
        l.bind(("127.0.0.1", 0))
        l.listen(65535)
        listeners.append(l)
    ports = [l.getsockname()[1] for l in listeners]
    stop_r, stop_w = os.pipe()
    servers = []
    for l in listeners:
        pid = os.fork()
        if pid == 0:
            os.close(stop_w)
            server(l, os.fdopen(stop_r))
            os._exit(0)
        servers.append(pid)
    os.close(stop_r)
    for l in listeners:
        l.close()
    ready_r, ready_w = os.pipe()
    kids = []
    per = a.connections // a.workers
    for _ in range(a.workers):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            client(ports, per, ready_w)
            os._exit(0)
        kids.append(pid)
    os.close(ready_w)
    opened = 0
    with os.fdopen(ready_r) as r:
        for _ in range(a.workers):
            opened += int(r.readline() or 0)
    print("READY %d" % opened, flush=True)
    sys.stdin.read()
    os.close(stop_w)
    for pid in kids + servers:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


if __name__ == "__main__":
    main()
