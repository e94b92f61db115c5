"""A bounded HTTPS load generator that presents a client certificate (loopback only).

Each process runs ``connections`` asyncio clients; every request carries a unique Pix
(``endToEndId`` from a per-run prefix), so a receiver stores each one. ``--fresh`` opens
a new TLS connection per request (how PSPs deliver); otherwise connections are kept alive
(and re-opened if the server closes them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import ssl
import sys
import time
from ipaddress import ip_address

BODY = '{{"pix":[{{"endToEndId":"{e2e}","txid":"bench","valor":"1.00","horario":"2026-11-23T10:00:00.000Z"}}]}}'


def _request(path: str, e2e: str, keep_alive: bool) -> bytes:
    body = BODY.format(e2e=e2e).encode()
    connection = "keep-alive" if keep_alive else "close"
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, server keeps the connection open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.read()
        return status, False
    keeps = not (lines[0].startswith("HTTP/1.0") or headers.get("connection", "").lower() == "close")
    return status, keeps


async def _client(args: argparse.Namespace, context: ssl.SSLContext, ids: "asyncio.Queue[str]",
                  stats: dict[str, list[float] | int]) -> None:
    reader = writer = None
    while True:
        try:
            e2e = ids.get_nowait()
        except asyncio.QueueEmpty:
            break
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(args.host, args.port, ssl=context,
                                                               server_hostname="localhost")
            writer.write(_request(args.path, e2e, not args.fresh))
            status, keeps = await _read_response(reader)  # type: ignore[arg-type]
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            stats["errors"] += 1  # type: ignore[operator]
            stats.setdefault("first_error", repr(exc))  # type: ignore[arg-type]
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        stats["latencies"].append(time.perf_counter() - started)  # type: ignore[union-attr]
        stats["ok" if 200 <= status < 300 else "non2xx"] += 1  # type: ignore[operator]
        if args.fresh or not keeps:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def _process(args: argparse.Namespace, index: int, results: "multiprocessing.Queue[dict]") -> None:
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert)

    async def main() -> dict:
        ids: asyncio.Queue[str] = asyncio.Queue()
        for n in range(args.requests // args.processes + (index < args.requests % args.processes)):
            ids.put_nowait(f"E{args.run_id}{index:02d}{n:08d}"[:32])
        stats: dict = {"ok": 0, "non2xx": 0, "errors": 0, "latencies": []}
        await asyncio.gather(*(_client(args, context, ids, stats) for _ in range(args.connections)))
        return stats

    results.put(asyncio.run(main()))


def run(args: argparse.Namespace) -> dict:
    if not ip_address(args.host).is_loopback:
        raise SystemExit("loadgen talks to loopback addresses only")
    results: multiprocessing.Queue[dict] = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_process, args=(args, i, results)) for i in range(args.processes)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    collected = [results.get(timeout=args.timeout) for _ in workers]
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join(10)
    latencies = sorted(lat for stats in collected for lat in stats["latencies"])
    ok = sum(s["ok"] for s in collected)

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "ok": ok, "non2xx": sum(s["non2xx"] for s in collected), "errors": sum(s["errors"] for s in collected),
        "first_error": next((s["first_error"] for s in collected if "first_error" in s), None),
        "seconds": elapsed, "rps": ok / elapsed, "p50_ms": percentile(0.50), "p99_ms": percentile(0.99),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/webhook/pix")
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True, help="client certificate PEM with its key")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--connections", type=int, default=8, help="per process")
    p.add_argument("--fresh", action="store_true", help="a new TLS connection per request")
    p.add_argument("--run-id", default=str(int(time.time()) % 10_000_000))
    p.add_argument("--timeout", type=float, default=600)
    return p


if __name__ == "__main__":
    print(json.dumps(run(parser().parse_args(sys.argv[1:]))))
