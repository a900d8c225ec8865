"""A TCP relay that delays everything by a fixed time each way: a network link on localhost.

``python -m bench.netdelay LISTEN_PORT TARGET_PORT DELAY_MS`` relays 127.0.0.1:LISTEN_PORT
to 127.0.0.1:TARGET_PORT. Each chunk leaves DELAY_MS after it arrived, in order, and chunks
in flight overlap, as on a link: a round trip costs 2 x DELAY_MS more (plus the event
loop's timer granularity, ~1 ms here). ``bench.pg`` uses it to show what a store across a
network costs; this kernel has no ``netem`` to do the same in the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time


async def _forward(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(1 << 16):
            queue.put_nowait((time.monotonic() + delay, data))
    queue.put_nowait((0.0, b""))
    with contextlib.suppress(ConnectionError):
        await sender


async def _serve(listen: int, target: int, delay: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(
            _forward(client_r, server_w, delay),
            _forward(server_r, client_w, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(int(args[0]), int(args[1]), float(args[2]) / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
