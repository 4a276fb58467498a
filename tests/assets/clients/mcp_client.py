"""MCP client for the end-to-end tests (tests/mcp.rs): the `mcp` SDK's ClientSession over its
streamable HTTP transport, one session: initialize, tools/list, tools/call `add` (ok),
tools/call `fail` (the tool raises: isError), tools/call of an unknown tool, prompts/get of an unknown prompt (a JSON-RPC error),
resources/read.
Prints one JSON line: what the SDK saw of each call, and the session ids the server gave.

    mcp_client.py --url URL [--ca CERT]
"""

import argparse
import asyncio
import json
import ssl

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def run(url: str, ca: str | None) -> dict:
    verify = ssl.create_default_context(cafile=ca) if ca else True
    out: dict = {"sessions": []}

    async def seen(resp: httpx2.Response) -> None:
        sid = resp.headers.get("mcp-session-id")
        if sid and sid not in out["sessions"]:
            out["sessions"].append(sid)

    hooks = {"response": [seen]}
    async with httpx2.AsyncClient(verify=verify, timeout=30, event_hooks=hooks) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as s:
                init = await s.initialize()
                out["protocol"] = init.protocol_version
                tools = await s.list_tools()
                out["tools"] = sorted(t.name for t in tools.tools)
                ok = await s.call_tool("add", {"a": 2, "b": 3})
                out["add_is_error"] = ok.is_error
                bad = await s.call_tool("fail", {"reason": "test"})
                out["fail_is_error"] = bad.is_error
                try:
                    unknown = await s.call_tool("no_such_tool", {})
                    out["unknown"] = {"is_error": unknown.is_error}
                except MCPError as e:
                    out["unknown"] = {"code": e.error.code}
                try:
                    await s.get_prompt("no_such_prompt")
                    out["prompt"] = {}
                except MCPError as e:
                    out["prompt"] = {"code": e.error.code}
                res = await s.read_resource("info://version")
                out["resource"] = res.contents[0].text
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--ca")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.ca))), flush=True)


if __name__ == "__main__":
    main()
