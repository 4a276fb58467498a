"""MCP server for the end-to-end tests (tests/mcp.rs): the `mcp` SDK's MCPServer (FastMCP in
mcp 1.x) over streamable HTTP at /mcp, served by uvicorn on 127.0.0.1 (port 0: prints
`LISTENING <port>` first). Tools: `add` (succeeds), `fail` (raises: a result with
isError: true); resource `info://version`.

    mcp_server.py [--json-response] [--tls-cert CERT --tls-key KEY]
"""

import argparse
import asyncio
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("llmprobe-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"failed on purpose: {reason}")


@server.resource("info://version")
def version() -> str:
    """The server's version."""
    return "1.0"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--json-response", action="store_true")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    args = p.parse_args()
    app = server.streamable_http_app(json_response=args.json_response)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(
        app,
        log_level="warning",
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
    )
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    sys.stdout.close()
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
