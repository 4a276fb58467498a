#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way delay to every byte in both directions (the scope
tests' stand-in for `tc qdisc ... netem delay` on kernels built without sch_netem).

    delay_proxy.py --target PORT --delay-ms 20

Prints `LISTENING <port>` first. Each chunk read is written to the other side `--delay-ms`
after it arrived (order kept), so a request/response round trip gains twice the delay, like
netem on a loopback device.
"""
import argparse, asyncio

ap = argparse.ArgumentParser()
ap.add_argument("--target", type=int, required=True)
ap.add_argument("--delay-ms", type=float, default=20.0)
a = ap.parse_args()
DELAY = a.delay_ms / 1000.0


async def pump(reader, writer):
    loop = asyncio.get_running_loop()
    q = asyncio.Queue()

    async def sender():
        while True:
            due, data = await q.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                break
            writer.write(data)
            await writer.drain()
        try:
            writer.close()
        except Exception:
            pass

    task = asyncio.create_task(sender())
    try:
        while True:
            data = await reader.read(65536)
            q.put_nowait((loop.time() + DELAY, data or None))
            if not data:
                break
    except Exception:
        q.put_nowait((loop.time(), None))
    await task


async def handle(cr, cw):
    try:
        sr, sw = await asyncio.open_connection("127.0.0.1", a.target)
    except Exception:
        cw.close()
        return
    await asyncio.gather(pump(cr, sw), pump(sr, cw), return_exceptions=True)


async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"LISTENING {srv.sockets[0].getsockname()[1]}", flush=True)
    async with srv:
        await srv.serve_forever()

asyncio.run(main())
