#!/usr/bin/env python3
"""An OpenAI-compatible chat server whose tokens come from a tiny random-weight transformer on
the GPU. As vLLM does, HTTP is served by the parent process and the model runs in a worker
process (its child): llmprobe must join the worker's GPU use with the parent's calls.

The worker batches every active request into one forward pass per step (no KV cache: each step
runs the whole sequence, which keeps the GPU busy enough to be seen by NVML).

    python3 gpu_llm_server.py --port 8099            # CUDA (PyTorch)
    python3 gpu_llm_server.py --port 8099 --fake      # no PyTorch: the worker sleeps per step
    python3 gpu_llm_server.py --port 8099 --device cpu --layers 2 --width 256   # dry run

Prints "READY <port> <server pid> <worker pid>" once the model has run its first step.
Standard library only, besides PyTorch.
"""

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VOCAB = 4096
MODEL_NAME = "tiny-random-gpu"


def die_with_parent():
    """The worker ends when the HTTP process does, however that ends (Linux PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        os._exit(0)


def worker(requests, results, fake, layers, width, device, ready):
    """Runs the model: takes (id, prompt ids, max tokens), emits (id, token) and (id, None)."""
    die_with_parent()
    if fake:
        step = lambda batch: [random.randrange(VOCAB) for _ in batch]  # noqa: E731
    else:
        import torch

        torch.manual_seed(0)
        dev = torch.device(device)
        layer = torch.nn.TransformerEncoderLayer(
            d_model=width, nhead=width // 64, dim_feedforward=4 * width, batch_first=True
        )
        model = torch.nn.ModuleDict(
            {
                "emb": torch.nn.Embedding(VOCAB, width),
                "body": torch.nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False),
                "head": torch.nn.Linear(width, VOCAB),
            }
        ).to(dev, dtype=torch.float16 if dev.type == "cuda" else torch.float32).eval()

        @torch.inference_mode()
        def step(batch):
            n = max(len(s) for s in batch)
            ids = torch.zeros((len(batch), n), dtype=torch.long)
            for i, s in enumerate(batch):
                ids[i, n - len(s):] = torch.tensor(s)
            x = model["emb"](ids.to(dev))
            mask = torch.nn.Transformer.generate_square_subsequent_mask(n, device=dev, dtype=x.dtype)
            h = model["body"](x, mask=mask, is_causal=True)
            logits = model["head"](h[:, -1, :])
            return logits.argmax(-1).tolist()

    step([[1, 2, 3]])  # warm up before saying ready
    ready.set()
    active = {}  # id -> [sequence, remaining]
    while True:
        block = not active
        try:
            while True:
                rid, prompt, max_tokens = requests.get(block=block, timeout=None if block else 0)
                block = False
                active[rid] = [list(prompt)[-192:], max_tokens]
        except queue.Empty:
            pass
        if not active:
            continue
        rids = list(active)
        toks = step([active[r][0] for r in rids])
        if fake:
            time.sleep(0.005)
        for rid, tok in zip(rids, toks):
            seq = active[rid]
            seq[0] = (seq[0] + [tok])[-256:]
            seq[1] -= 1
            results.put((rid, tok))
            if seq[1] <= 0:
                results.put((rid, None))
                del active[rid]


class Model:
    """The parent's side: routes the worker's tokens to the request that asked for them."""

    def __init__(self, fake, layers, width, device):
        ctx = mp.get_context("spawn")
        self.requests = ctx.Queue()
        self.results = ctx.Queue()
        ready = ctx.Event()
        self.proc = ctx.Process(
            target=worker, args=(self.requests, self.results, fake, layers, width, device, ready), daemon=True
        )
        self.proc.start()
        deadline = time.time() + 300
        while not ready.wait(0.5):
            if not self.proc.is_alive():
                raise SystemExit(f"the model worker exited ({self.proc.exitcode}): see its error above")
            if time.time() > deadline:
                raise SystemExit("the model worker did not start in 300 s")
        self.waiting = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._route, daemon=True).start()

    def _route(self):
        while True:
            rid, tok = self.results.get()
            with self.lock:
                q = self.waiting.get(rid)
            if q is not None:
                q.put(tok)

    def generate(self, prompt_ids, max_tokens):
        rid = uuid.uuid4().hex
        q = queue.Queue()
        with self.lock:
            self.waiting[rid] = q
        self.requests.put((rid, prompt_ids, max_tokens))
        try:
            while True:
                tok = q.get(timeout=120)
                if tok is None:
                    return
                yield tok
        finally:
            with self.lock:
                self.waiting.pop(rid, None)


def prompt_ids(messages):
    text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return [hash(w) % VOCAB for w in text.split()] or [0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    model = None

    def log_message(self, *a):
        pass

    def _json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._json(200, {"status": "ok"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        try:
            req = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return self._json(400, {"error": {"message": "bad json"}})
        if self.path != "/v1/chat/completions":
            return self._json(404, {"error": {"message": "not found"}})
        ids = prompt_ids(req.get("messages") or [])
        max_tokens = max(1, min(int(req.get("max_tokens") or 64), 1024))
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        created = int(time.time())
        if not req.get("stream"):
            toks = list(self.model.generate(ids, max_tokens))
            return self._json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": MODEL_NAME,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(f" w{t}" for t in toks)},
                            "finish_reason": "length",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": len(ids),
                        "completion_tokens": len(toks),
                        "total_tokens": len(ids) + len(toks),
                    },
                },
            )
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(obj):
            data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def chunk(delta, finish=None):
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL_NAME,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        count = 0
        try:
            send(chunk({"role": "assistant", "content": ""}))
            for tok in self.model.generate(ids, max_tokens):
                count += 1
                send(chunk({"content": f" w{tok}"}))
            send(chunk({}, "length"))
            if (req.get("stream_options") or {}).get("include_usage"):
                u = chunk({})
                u["choices"] = []
                u["usage"] = {
                    "prompt_tokens": len(ids),
                    "completion_tokens": count,
                    "total_tokens": len(ids) + count,
                }
                send(u)
            send(b"[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8099)
    ap.add_argument("--fake", action="store_true", help="no PyTorch: the worker sleeps per step")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--device", default="cuda", help="torch device (cpu for a dry run)")
    a = ap.parse_args()
    Handler.model = Model(a.fake, a.layers, a.width, a.device)
    # SIGTERM ends serve_forever through the finally below, which stops the worker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    print(f"READY {srv.server_address[1]} {os.getpid()} {Handler.model.proc.pid}", flush=True)
    try:
        srv.serve_forever()
    finally:
        Handler.model.proc.terminate()


if __name__ == "__main__":
    sys.exit(main())
