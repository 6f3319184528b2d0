#!/usr/bin/env python3
"""Memory of many keep-alive connections, for benches/load/run.sh (issue 23 item 5).

Opens CONNECTIONS keep-alive HTTP/1.1 connections to fhirguard (plain, or TLS with --tls), each
sending its first request as soon as it is open, then sends ROUNDS more rounds of one request on
every one of the same connections. After opening and after each round it reads the server's
resident set (VmRSS of --pid), so memory that grows with traffic over the same connections shows
as a rising figure. Prints one line:

    HOLDRESULT open=N rss_idle_kib=N rss_open_kib=N rss_rounds_kib=N,N,... ok=N failed=N seconds=F

Loopback only; bounded by --timeout (the whole run).
"""

import argparse
import asyncio
import ssl
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def exchange(reader, writer, request):
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def main(args):
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
        f"Authorization: Bearer {open(args.token).read().strip()}\r\n\r\n"
    ).encode()
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
    gate = asyncio.Semaphore(args.parallel)
    connections = []
    ok = failed = 0
    reasons = {}

    def fail(error):
        nonlocal failed
        failed += 1
        reasons[type(error).__name__] = reasons.get(type(error).__name__, 0) + 1

    async def open_one():
        nonlocal ok, failed
        async with gate:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", args.port, ssl=context)
                status = await exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError, ssl.SSLError) as error:
                fail(error)
                return
            connections.append((reader, writer))
            if status == 200:
                ok += 1
            else:
                fail(ValueError(status))

    async def again(reader, writer):
        nonlocal ok, failed
        async with gate:
            try:
                status = await exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError, ssl.SSLError) as error:
                fail(error)
                return
            if status == 200:
                ok += 1
            else:
                fail(ValueError(status))

    started = time.time()
    idle = rss_kib(args.pid)
    await asyncio.gather(*(open_one() for _ in range(args.connections)))
    opened = rss_kib(args.pid)
    rounds = []
    for _ in range(args.rounds):
        await asyncio.sleep(0.5)
        await asyncio.gather(*(again(r, w) for r, w in connections))
        rounds.append(rss_kib(args.pid))
    print(
        f"HOLDRESULT open={len(connections)} rss_idle_kib={idle} rss_open_kib={opened} "
        f"rss_rounds_kib={','.join(map(str, rounds))} ok={ok} failed={failed} "
        f"seconds={time.time() - started:.1f}",
        flush=True,
    )
    if reasons:
        print(f"failures: {reasons}", file=sys.stderr)
    for _, writer in connections:
        writer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the server, for its VmRSS")
    parser.add_argument("--token", required=True, help="file holding the bearer token")
    parser.add_argument("--path", default="/Patient/1")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=256, help="connections opening at once")
    parser.add_argument("--timeout", type=float, default=120)
    parsed = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(main(parsed), parsed.timeout))
    except asyncio.TimeoutError:
        sys.exit(f"hold.py: not done within {parsed.timeout}s")
