#!/usr/bin/env node
// node_fetch.mjs - OpenAI-style chat completion client using Node's built-in
// fetch (undici). No npm dependencies. Node >= 18.
//
//   node node_fetch.mjs --url URL [--model test-model] [--stream]
//        [--include-usage] [--calls N] [--prompt TEXT] [--header K=V ...]
//        [--pause-ms 20]
//
// --url   full endpoint, e.g. https://127.0.0.1:PORT/v1/chat/completions.
//         A base URL (".../v1" or "...:PORT") gets "/chat/completions" appended.
// --calls N sequential calls; undici keeps the connection alive, so they share
//         one TCP/TLS connection.
// --pause-ms P  pause between sequential calls (default 20). Without a pause
//         undici's pool may not yet have marked the connection idle when the
//         next fetch() starts and opens a second connection (calls then
//         alternate between 2 connections: A,B,A,B). -1 = no pause at all.
//
// Env:
//   OPENAI_API_KEY       sent as "Authorization: Bearer ..." (default
//                        sk-test-secret-do-not-leak)
//   NODE_EXTRA_CA_CERTS  TLS trust for the self-signed test cert, e.g.
//                        NODE_EXTRA_CA_CERTS=/tmp/certs/cert.pem. Node reads it at
//                        process start-up only, so it must be in the environment
//                        of the node process (it cannot be set from inside).
//
// Streams are read chunk by chunk with res.body.getReader() until the end.
// Prints ONE JSON line on stdout:
//   {"pid": N, "calls": [{"status": 200, "chunks": n, "reads": r,
//                         "content": "...", "model": "...", "usage": {...}|null}]}
//   chunks = SSE events carrying non-empty delta content (stream) or 0
//   reads  = number of reader.read() results (network-dependent)
// Exit status 1 on any exception.

const DEFAULT_KEY = "sk-test-secret-do-not-leak";

function parseArgs(argv) {
  const a = { url: null, model: "test-model", stream: false, includeUsage: false,
              calls: 1, prompt: "Say hello to the test server", headers: {}, pauseMs: 20 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    switch (k) {
      case "--url": a.url = val(); break;
      case "--model": a.model = val(); break;
      case "--stream": a.stream = true; break;
      case "--include-usage": a.includeUsage = true; break;
      case "--calls": a.calls = parseInt(val(), 10); break;
      case "--prompt": a.prompt = val(); break;
      case "--pause-ms": a.pauseMs = parseInt(val(), 10); break;
      case "--header": {
        const h = val(); const j = h.indexOf("=");
        if (j <= 0) throw new Error(`--header expects K=V, got ${h}`);
        a.headers[h.slice(0, j)] = h.slice(j + 1);
        break;
      }
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  if (!a.url) throw new Error("--url is required");
  if (!/\/chat\/completions\/?$/.test(a.url)) a.url = a.url.replace(/\/+$/, "") + "/chat/completions";
  if (!(a.calls >= 1)) a.calls = 1;
  return a;
}

function takeEvent(res, data) {
  if (data === "[DONE]") return;
  const obj = JSON.parse(data);
  if (res.model === null && obj.model) res.model = obj.model;
  if (obj.usage) res.usage = obj.usage;
  for (const ch of obj.choices || []) {
    const c = ch.delta && ch.delta.content;
    if (c) { res.chunks++; res.content += c; }
  }
}

async function oneCall(a) {
  const body = { model: a.model, messages: [{ role: "user", content: a.prompt }] };
  if (a.stream) {
    body.stream = true;
    if (a.includeUsage) body.stream_options = { include_usage: true };
  }
  const resp = await fetch(a.url, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "Authorization": `Bearer ${process.env.OPENAI_API_KEY || DEFAULT_KEY}`,
      ...a.headers,
    },
    body: JSON.stringify(body),
  });
  const res = { status: resp.status, chunks: 0, reads: 0, content: "", model: null, usage: null };
  if (!a.stream || resp.status !== 200) {
    const text = await resp.text();
    if (resp.status === 200) {
      const obj = JSON.parse(text);
      res.model = obj.model ?? null;
      res.usage = obj.usage ?? null;
      res.content = (obj.choices || []).map((c) => (c.message && c.message.content) || "").join("");
    }
    return res;
  }
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    res.reads++;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, i); buf = buf.slice(i + 2);
      for (const line of ev.split("\n")) {
        if (line.startsWith("data:")) takeEvent(res, line.slice(5).trim());
      }
    }
  }
  return res;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const calls = [];
  for (let n = 0; n < a.calls; n++) {
    if (n > 0 && a.pauseMs >= 0) await new Promise((r) => setTimeout(r, a.pauseMs));
    calls.push(await oneCall(a));
  }
  process.stdout.write(JSON.stringify({ pid: process.pid, calls }) + "\n");
}

main().catch((e) => {
  process.stderr.write(`node_fetch.mjs: ${e && e.stack ? e.stack : e}\n`);
  if (e && e.cause) process.stderr.write(`cause: ${e.cause}\n`);
  process.exit(1);
});
