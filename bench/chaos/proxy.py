"""A TCP proxy the chaos driver controls: forwards LISTEN -> TARGET and takes one-line commands on CONTROL:
`cut` (close every connection and refuse new ones: a reset), `blackhole` (keep connections open, forward nothing,
accept new ones and leave them silent: a partition), `heal` (forward again). Loopback only.

    python3 proxy.py LISTEN_PORT TARGET_PORT CONTROL_PORT
"""
import asyncio
import sys

LISTEN, TARGET, CONTROL = (int(a) for a in sys.argv[1:4])
mode = "ok"
conns = set()
healed = asyncio.Event()


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            while mode == "blackhole":
                await healed.wait()
            if mode == "cut":
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError, OSError):
        pass
    finally:
        writer.close()


async def client(reader, writer):
    if mode == "cut":
        writer.close()
        return
    while mode == "blackhole":
        await healed.wait()
    try:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", TARGET)
    except OSError:
        writer.close()
        return
    pair = (writer, up_w)
    conns.add(pair)
    try:
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
    finally:
        conns.discard(pair)


async def control(reader, writer):
    global mode
    line = (await reader.readline()).decode().strip()
    if line in ("cut", "blackhole", "heal"):
        mode = "ok" if line == "heal" else line
        if line == "heal":
            healed.set()
            healed.clear()
        if line == "cut":
            for a, b in list(conns):
                for w in (a, b):
                    try:
                        w.transport.abort()
                    except Exception:
                        pass
            conns.clear()
        writer.write(b"ok\n")
    else:
        writer.write(b"unknown\n")
    await writer.drain()
    writer.close()


async def main():
    s1 = await asyncio.start_server(client, "127.0.0.1", LISTEN)
    s2 = await asyncio.start_server(control, "127.0.0.1", CONTROL)
    async with s1, s2:
        await asyncio.gather(s1.serve_forever(), s2.serve_forever())


asyncio.run(main())
