#!/usr/bin/env python3
"""Multi-turn conversations through the real `openai` SDK, for llmprobe's conversation e2e test.

    python conversation_client.py --base-url http://127.0.0.1:PORT/v1 --scenario NAME
        [--ca cert.pem] [--word WORD]

Every call streams chat completions (stream_options.include_usage) on one sync `OpenAI` client;
each turn appends the assistant's answer and a new user message to the history, as chat apps do.
Every prompt contains --word (default "zebraquartz"), so a test can check that no prompt text
reaches llmprobe's outputs.

Scenarios
  history     two conversations A and B, interleaved (A1 B1 A2 B2 A3 B3), no ids
  explicit    conversation X: 3 turns, `user` and metadata.conversation_id, each turn sends only
              its new user message (the server would hold the history); conversation Y: 2 turns,
              no body ids, the `x-conversation-id` request header
  regenerate  turn 1, turn 2, then turn 2's history sent again (a regenerated answer)
  abandon     turn 1, then turn 2 closed by the client after 2 chunks; the process then exits

API key: env OPENAI_API_KEY. Prints one JSON line at the end: {"pid": PID, "calls": N}.
"""

import argparse
import json
import os
import ssl

import httpx
from openai import OpenAI


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--ca")
    ap.add_argument("--scenario", required=True,
                    choices=["history", "explicit", "regenerate", "abandon"])
    ap.add_argument("--word", default="zebraquartz")
    args = ap.parse_args()
    http_client = None
    if args.ca:
        http_client = httpx.Client(verify=ssl.create_default_context(cafile=args.ca))
    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY", "sk-test"),
                    max_retries=0, http_client=http_client)
    calls = 0

    def call(messages, abort_after=None, **kw):
        nonlocal calls
        calls += 1
        stream = client.chat.completions.create(
            model="test-model", messages=messages, stream=True,
            stream_options={"include_usage": True}, **kw)
        text, n = "", 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                n += 1
                if abort_after is not None and n >= abort_after:
                    stream.close()
                    return None
        return text

    w = args.word
    system = {"role": "system", "content": f"You are a helpful {w} assistant."}

    def user(s):
        return {"role": "user", "content": f"{w} {s}"}

    if args.scenario == "history":
        a = [system, user("tell me about apples")]
        b = [system, user("tell me about boats")]
        for turn in range(3):
            for conv, topic in ((a, "apples"), (b, "boats")):
                answer = call(conv)
                conv.append({"role": "assistant", "content": answer})
                conv.append(user(f"more about {topic}, part {turn + 2}"))
    elif args.scenario == "explicit":
        for turn in range(3):
            call([system, user(f"explicit question {turn}")], user="end-user-42",
                 metadata={"conversation_id": "conv-explicit-1"})
        for turn in range(2):
            call([user(f"header question {turn}")],
                 extra_headers={"x-conversation-id": "conv-header-7"})
    elif args.scenario == "regenerate":
        conv = [system, user("write a haiku")]
        conv.append({"role": "assistant", "content": call(conv)})
        conv.append(user("another one"))
        call(conv)
        call(conv)  # the user asked for another answer to the same history
    elif args.scenario == "abandon":
        conv = [system, user("start a story")]
        conv.append({"role": "assistant", "content": call(conv)})
        conv.append(user("continue the story"))
        call(conv, abort_after=2)
    print(json.dumps({"pid": os.getpid(), "calls": calls}), flush=True)


if __name__ == "__main__":
    main()
