#!/usr/bin/env python3
"""A two-step agent loop through a real SDK, for llmprobe's tool-call e2e tests.

    python tool_loop.py --sdk openai|anthropic --base-url URL [--ca cert.pem] [--stream]
        [--model M]

--base-url: for openai WITH /v1, for anthropic WITHOUT (the SDK appends /v1/messages).
API keys: env OPENAI_API_KEY / ANTHROPIC_API_KEY (test defaults otherwise).

Step 1 sends the prompt with two tool definitions (get_weather, get_time); the model (the test
server) answers with tool calls. Step 2 sends the history with one tool result per call (the
SDK's own message shapes: OpenAI `role: "tool"` messages with `tool_call_id`, Anthropic
`tool_result` blocks with `tool_use_id`) and the same tools; the model answers with text.
Streams go through the SDK's stream helpers, which assemble the tool calls from the deltas.

Prints exactly ONE JSON line on stdout:
    {"pid": PID, "steps": [{"finish_reason": "...", "tool_calls": [{"id","name","arguments"}],
                            "content": "..."}, {...}]}
"""

import argparse
import json
import os
import ssl
import sys

TOOLS = [
    ("get_weather", "Current weather for a city"),
    ("get_time", "Current time in a time zone"),
]
PROMPT = "What is the weather and the time in Paris?"


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdk", choices=["openai", "anthropic"], required=True)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--ca")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--model", default="tool-model")
    return ap.parse_args()


def http_client(sdk, a):
    """The SDK's own default HTTP client class (each SDK checks it), trusting --ca."""
    if not a.ca:
        return None
    return sdk.DefaultHttpxClient(verify=ssl.create_default_context(cafile=a.ca))


def run_tool(name, arguments):
    return json.dumps({"tool": name, "result": "sunny" if name == "get_weather" else "12:00"})


def openai_loop(a):
    import openai

    client = openai.OpenAI(base_url=a.base_url,
                           api_key=os.environ.get("OPENAI_API_KEY", "sk-test-secret-do-not-leak"),
                           http_client=http_client(openai, a), max_retries=0)
    tools = [{"type": "function",
              "function": {"name": n, "description": d,
                           "parameters": {"type": "object",
                                          "properties": {"q": {"type": "string"}}}}}
             for n, d in TOOLS]
    messages = [{"role": "user", "content": PROMPT}]

    def call():
        if a.stream:
            with client.chat.completions.stream(model=a.model, messages=messages,
                                                tools=tools) as s:
                for _ in s:
                    pass
                c = s.get_final_completion()
        else:
            c = client.chat.completions.create(model=a.model, messages=messages, tools=tools)
        choice = c.choices[0]
        calls = [{"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
                 for tc in (choice.message.tool_calls or [])]
        return choice, {"finish_reason": choice.finish_reason, "tool_calls": calls,
                        "content": choice.message.content or ""}

    steps = []
    choice, step = call()
    steps.append(step)
    messages.append({"role": "assistant", "content": None,
                     "tool_calls": [{"id": tc["id"], "type": "function",
                                     "function": {"name": tc["name"],
                                                  "arguments": tc["arguments"]}}
                                    for tc in step["tool_calls"]]})
    for tc in step["tool_calls"]:
        messages.append({"role": "tool", "tool_call_id": tc["id"],
                         "content": run_tool(tc["name"], tc["arguments"])})
    _, step = call()
    steps.append(step)
    return steps


def anthropic_loop(a):
    import anthropic

    client = anthropic.Anthropic(
        base_url=a.base_url,
        api_key=os.environ.get("ANTHROPIC_API_KEY", "sk-ant-test-secret-do-not-leak"),
        http_client=http_client(anthropic, a), max_retries=0)
    tools = [{"name": n, "description": d,
              "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
             for n, d in TOOLS]
    messages = [{"role": "user", "content": PROMPT}]

    def call():
        if a.stream:
            with client.messages.stream(model=a.model, max_tokens=1024, messages=messages,
                                        tools=tools) as s:
                for _ in s:
                    pass
                m = s.get_final_message()
        else:
            m = client.messages.create(model=a.model, max_tokens=1024, messages=messages,
                                       tools=tools)
        calls = [{"id": b.id, "name": b.name, "arguments": json.dumps(b.input)}
                 for b in m.content if b.type == "tool_use"]
        text = "".join(b.text for b in m.content if b.type == "text")
        return m, {"finish_reason": m.stop_reason, "tool_calls": calls, "content": text}

    steps = []
    m, step = call()
    steps.append(step)
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_unset=True)
                                                      for b in m.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tc["id"],
         "content": run_tool(tc["name"], tc["arguments"])} for tc in step["tool_calls"]]})
    _, step = call()
    steps.append(step)
    return steps


def main():
    a = parse_args()
    steps = openai_loop(a) if a.sdk == "openai" else anthropic_loop(a)
    print(json.dumps({"pid": os.getpid(), "steps": steps}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
