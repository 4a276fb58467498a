#!/usr/bin/env python3
"""Dify service-API client for llmprobe's e2e tests, through the official `dify-client` package
(PyPI; it sends with `requests`, so OpenSSL through Python's ssl module).

    python dify_app_client.py --base-url URL/v1 [--ca cert.pem] STEP [STEP ...]

Each STEP is one call, in order:
    chat-stream        ChatClient.create_chat_message(response_mode="streaming"), a new
                       conversation (or the last call's one with chat-stream-cont)
    chat-stream-cont   the same, continuing the conversation of the previous chat call
    chat-blocking      ChatClient.create_chat_message(response_mode="blocking")
    completion-blocking CompletionClient.create_completion_message(response_mode="blocking")
    chat-stream-error  a streaming chat whose stream ends in an "error" event
                       (the test server's inputs.x_test_stream_error_after)
    workflow-stream    POST /workflows/run (streaming) through the client's own request
                       method: dify-client 0.1.10 has no workflow helper

API key: env DIFY_API_KEY (default "app-test-secret-do-not-leak"). For TLS, --ca sets
REQUESTS_CA_BUNDLE (the client takes no verify argument).

Prints ONE JSON line: {"pid": PID, "calls": [{"step", "status", "events": [event names],
"answer", "usage": message_end's metadata.usage | null, "conversation_id", "ttft_ms" (first
non-empty answer or text_chunk), "duration_ms", "nodes": [{"node_type", "status",
"elapsed_time"}], "error_code"}]}.
"""

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--ca")
    ap.add_argument("steps", nargs="+")
    a = ap.parse_args()
    if a.ca:
        os.environ["REQUESTS_CA_BUNDLE"] = a.ca
    from dify_client import ChatClient, CompletionClient

    key = os.environ.get("DIFY_API_KEY", "app-test-secret-do-not-leak")
    chat = ChatClient(key)
    chat.base_url = a.base_url
    completion = CompletionClient(key)
    completion.base_url = a.base_url
    user = "user-e2e-1"
    conversation = None
    calls = []
    for step in a.steps:
        t0 = time.monotonic()
        if step in ("chat-stream", "chat-stream-cont", "chat-stream-error"):
            inputs = {"x_test_stream_error_after": 2} if step == "chat-stream-error" else {}
            conv = conversation if step == "chat-stream-cont" else None
            r = chat.create_chat_message(inputs, "Say hello to the test server", user,
                                         response_mode="streaming", conversation_id=conv)
        elif step == "chat-blocking":
            r = chat.create_chat_message({}, "Say hello to the test server", user,
                                         response_mode="blocking")
        elif step == "completion-blocking":
            r = completion.create_completion_message({"query": "Say hello to the test server"},
                                                     "blocking", user)
        elif step == "workflow-stream":
            r = chat._send_request("POST", "/workflows/run",
                                   {"inputs": {"topic": "the test server"},
                                    "response_mode": "streaming", "user": user},
                                   stream=True)
        else:
            sys.exit(f"unknown step {step}")
        call = {"step": step, "status": r.status_code, "events": [], "answer": "",
                "usage": None, "conversation_id": None, "ttft_ms": None, "nodes": [],
                "error_code": None}
        if "event-stream" in r.headers.get("content-type", ""):
            for line in r.iter_lines():
                line = line.decode() if isinstance(line, bytes) else line
                if line.startswith("event:"):
                    call["events"].append(line[6:].strip())
                    continue
                if not line.startswith("data:"):
                    continue
                o = json.loads(line[5:])
                call["events"].append(o.get("event"))
                text = o.get("answer") or (o.get("data") or {}).get("text") \
                    if o.get("event") in ("message", "text_chunk") else None
                if text:
                    if call["ttft_ms"] is None:
                        call["ttft_ms"] = (time.monotonic() - t0) * 1000
                    call["answer"] += text
                if o.get("conversation_id"):
                    call["conversation_id"] = o["conversation_id"]
                if o.get("event") == "message_end":
                    call["usage"] = o["metadata"]["usage"]
                if o.get("event") == "node_finished":
                    d = o["data"]
                    call["nodes"].append({"node_type": d["node_type"], "status": d["status"],
                                          "elapsed_time": d["elapsed_time"]})
                if o.get("event") == "error":
                    call["error_code"] = o.get("code")
        else:
            o = r.json()
            call["answer"] = o.get("answer", "")
            call["usage"] = (o.get("metadata") or {}).get("usage")
            call["conversation_id"] = o.get("conversation_id")
        r.close()
        call["duration_ms"] = (time.monotonic() - t0) * 1000
        if step.startswith("chat") and call["conversation_id"]:
            conversation = call["conversation_id"]
        calls.append(call)
    print(json.dumps({"pid": os.getpid(), "calls": calls}), flush=True)


if __name__ == "__main__":
    main()
