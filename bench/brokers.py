"""Forwarding throughput per destination: HTTP, RabbitMQ, NATS JetStream, Redis Streams, on loopback.

For each destination and concurrency: ``--events`` events are put in a fresh SQLite inbox's outbox
(through the store's own ``record``, as requests would), then ``mtls-receiver serve`` (one process,
the forwarder in it) is started and timed until its per-destination counter says every event was
delivered. Receiver CPU = user+sys of the receiver's process from /proc over that window; the
destination's CPU (the broker's processes, or the HTTP sink) is measured over the same window and
reported separately. Every run uses names of its own on the machine's brokers and removes them.
Results are printed and written to BENCHMARKS.md, below bench/run.py's marker, between this
script's own markers (run.py keeps what is below its marker).

    python bench/brokers.py [--events 3000] [--repeat 3] [--concurrency 4,32] [--only rabbitmq,nats]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

from run import HERE, ROOT, TICKS, Certificates, free_port, machine, tree, wait_for_port

from mtls_receiver.config import StoreConfig
from mtls_receiver.events import AuditRecord, NewEvent
from mtls_receiver.store import open_store
from mtls_receiver.store.base import Access

SECRET = "whsec_" + "YmVuY2htYXJrLWZvcndhcmRpbmctc2VjcmV0LTMyYg=="
KINDS = ("http", "rabbitmq", "nats", "redis")
BROKER_PROCESSES = {"rabbitmq": ("beam.smp",), "nats": ("nats-server",), "redis": ("redis-server",)}
BEGIN = "<!-- bench/brokers.py writes from here to its end marker; keep notes outside it. -->"
END = "<!-- bench/brokers.py: end -->"


def destination_table(kind: str, name: str, sink_port: int) -> str:
    """The ``[[destinations]]`` entry (or the URL) and ``[forward]`` for one run."""
    if kind == "http":
        return f'\n[forward]\nurl = "http://127.0.0.1:{sink_port}/events"\n'
    head = f'\n[[destinations]]\nname = "bench"\ntype = "{kind}"\n'
    if kind == "rabbitmq":
        head += (
            f'url = "amqp://127.0.0.1:5672/"\nexchange = "{name}"\nrouting_key = "{name}.{{type}}"\n'
            f'declare = true\nqueue = "{name}"\nbinding_key = "{name}.#"\n'
        )
    elif kind == "nats":
        head += (
            f'url = "nats://127.0.0.1:4222"\nsubject = "{name}.{{type}}"\ndeclare = true\nstream = "{name}"\n'
        )
    else:
        head += f'url = "redis://127.0.0.1:6379/0"\nstream = "{name}"\n'
    return head + '\n[forward]\ndestination = "bench"\n'


def config_text(
    certs: Certificates, work: Path, port: int, admin: int, forward: str, concurrency: int
) -> str:
    return f"""workers = 1

[[listeners]]
address = "127.0.0.1:{port}"
cert = "{certs.server_cert}"
key = "{certs.server_key}"
client_certs = "required"
client_ca = "{certs.client_ca}"

[[routes]]
path = "/webhook"
provider = "efi"

[store]
path = "{work / "inbox.db"}"

[admin]
address = "127.0.0.1:{admin}"
{forward}secrets = [{{ env = "BENCH_FORWARD_SECRET" }}]
concurrency = {concurrency}
"""


async def prefill(path: Path, events: int) -> None:
    """``events`` Pix events stored and queued, 100 per commit, each with a key of its own."""
    store = open_store(StoreConfig(path=path), Access.SERVE)
    await store.open()
    try:
        for start in range(0, events, 100):
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            batch = []
            for n in range(start, min(start + 100, events)):
                e2e = f"E{uuid.uuid4().hex[:28]}"
                payload = {"endToEndId": e2e, "txid": f"t{n}", "valor": "10.00", "horario": now}
                batch.append(NewEvent("pix", e2e, payload, order_key=e2e))
            audit = AuditRecord(now, "default", "/webhook", "POST", "/webhook/pix", "127.0.0.1", 200, "")
            await store.record("efi", "/webhook", batch, audit, "mtls-client-certificate", queue=True)
    finally:
        await store.close()


def pids_named(names: tuple[str, ...]) -> list[int]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in names:
                found.append(int(comm.parent.name))
        except OSError:
            continue
    return found


def cpu_of(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def delivered(admin: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(
        r'^mtls_receiver_destination_deliveries_total\{[^}]*outcome="delivered"[^}]*\} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


def one_run(kind: str, concurrency: int, events: int, certs: Certificates, root: Path) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(dir=root))
    name = f"mtlsr-bench-{uuid.uuid4().hex[:10]}"
    port, admin, sink_port = free_port(), free_port(), free_port()
    sink = None
    if kind == "http":
        sink = subprocess.Popen([sys.executable, str(HERE / "sink.py"), str(sink_port)])
        wait_for_port(sink_port, process=sink)
    config = work / "config.toml"
    forward = destination_table(kind, name, sink_port)
    config.write_text(config_text(certs, work, port, admin, forward, concurrency), encoding="utf-8")
    asyncio.run(prefill(work / "inbox.db", events))
    destination_pids = tree(sink.pid) if sink else pids_named(BROKER_PROCESSES[kind])
    env = {**os.environ, "BENCH_FORWARD_SECRET": SECRET}
    command = [
        sys.executable,
        "-m",
        "mtls_receiver",
        "--log-level",
        "warning",
        "serve",
        "--config",
        str(config),
    ]
    receiver = subprocess.Popen(command, env=env, cwd=work)
    try:
        wait_for_port(admin, process=receiver)
        wall, receiver_cpu, destination_cpu = (
            time.monotonic(),
            cpu_of([receiver.pid]),
            cpu_of(destination_pids),
        )
        while delivered(admin) < events:
            if time.monotonic() - wall > 300:
                raise RuntimeError(f"{kind}: not all {events} events delivered within 300 s")
            time.sleep(0.05)
        seconds = time.monotonic() - wall
        receiver_cpu = cpu_of([receiver.pid]) - receiver_cpu
        destination_cpu = cpu_of(destination_pids) - destination_cpu
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
        if sink is not None:
            sink.terminate()
            sink.wait(10)
        asyncio.run(cleanup(kind, name))
    return {
        "events_per_s": events / seconds,
        "seconds": seconds,
        "receiver_cpu": receiver_cpu,
        "per_cpu_s": events / receiver_cpu if receiver_cpu else float("inf"),
        "destination_cpu": destination_cpu,
    }


async def cleanup(kind: str, name: str) -> None:
    if kind == "rabbitmq":
        import aio_pika

        connection = await aio_pika.connect("amqp://127.0.0.1:5672/")
        channel = await connection.channel()
        await channel.queue_delete(name)
        await channel.exchange_delete(name)
        await connection.close()
    elif kind == "nats":
        import nats

        client = await nats.connect("nats://127.0.0.1:4222")
        await client.jetstream().delete_stream(name)
        await client.close()
    elif kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.from_url("redis://127.0.0.1:6379/0")
        await client.delete(name)
        await client.aclose()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3000, help="events per run (default 3000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median is reported")
    parser.add_argument("--concurrency", default="4,32", help="forward.concurrency values (default 4,32)")
    parser.add_argument("--only", default=",".join(KINDS), help=f"destinations (default {','.join(KINDS)})")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    kinds = [kind for kind in args.only.split(",") if kind]
    concurrencies = [int(value) for value in args.concurrency.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-brokers-") as directory:
        root = Path(directory)
        certs = Certificates(root)
        for kind in kinds:
            for concurrency in concurrencies:
                runs = [one_run(kind, concurrency, args.events, certs, root) for _ in range(args.repeat)]
                runs.sort(key=lambda run: run["events_per_s"])
                median = runs[len(runs) // 2]
                low, high = runs[0]["events_per_s"], runs[-1]["events_per_s"]
                rows.append((kind, concurrency, median, low, high))
                print(
                    f"{kind:9} concurrency {concurrency:3}: {median['events_per_s']:7.0f} events/s"
                    f" ({low:.0f}-{high:.0f}), {median['per_cpu_s']:7.0f} per receiver CPU-s,"
                    f" receiver {median['receiver_cpu']:.2f} CPU-s,"
                    f" destination {median['destination_cpu']:.2f} CPU-s",
                    flush=True,
                )
    write_report(args, rows)


def write_report(
    args: argparse.Namespace, rows: list[tuple[str, int, dict[str, float], float, float]]
) -> None:
    command = "python bench/brokers.py" + "".join(
        f" --{flag} {value}"
        for flag, value, default in (
            ("events", args.events, 3000),
            ("repeat", args.repeat, 3),
            ("concurrency", args.concurrency, "4,32"),
            ("only", args.only, ",".join(KINDS)),
        )
        if value != default
    )
    labels = {
        "http": "HTTP (aiohttp sink)",
        "rabbitmq": "RabbitMQ",
        "nats": "NATS JetStream",
        "redis": "Redis Streams",
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "",
        f"## Forwarding throughput per destination (issue 21), {stamp}",
        "",
        f"{machine()}. Command: `{command}` ({args.events} events per run, each with a key of its own,"
        " put in a fresh SQLite inbox's outbox before the receiver starts; one receiver process;"
        " timed from its start until its per-destination counter says every event was delivered;"
        " loopback only). Receiver CPU = user+sys of the receiver process; destination CPU = the"
        " broker's processes (RabbitMQ's beam.smp, nats-server, redis-server) or the HTTP sink, over"
        " the same window, measured separately (the machine's brokers as installed: RabbitMQ with"
        " durable queue and persistent messages, NATS JetStream file storage, Redis without AOF)."
        f" Median of {args.repeat} runs by events/s (range in brackets).",
        "",
        "| destination | concurrency | events/s | events per receiver CPU-s | receiver CPU s"
        " | destination CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, concurrency, median, low, high in rows:
        lines.append(
            f"| {labels[kind]} | {concurrency} | {median['events_per_s']:.0f} ({low:.0f}–{high:.0f})"
            f" | {median['per_cpu_s']:.0f} | {median['receiver_cpu']:.2f} | {median['destination_cpu']:.2f} |"
        )
    lines += ["", END]
    text = args.output.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        before, _, rest = text.partition(BEGIN)
        _, _, after = rest.partition(END)
        text = before + "\n".join(lines) + after
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
