"""The machine's brokers as a test sees them: a ``[[destinations]]`` entry, a real consumer, cleanup.

Each kit works on its own names (``name``: the exchange/queue, the JetStream stream and subject
prefix, the Redis stream) and removes them in ``cleanup``. ``read()`` consumes what arrived since
the last call (acknowledging it, as a consumer does) and returns everything read so far, in order.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

PORTS = {"rabbitmq": 5672, "nats": 4222, "redis": 6379}


def reachable(kind: str) -> bool:
    """Whether the broker answers; in CI (``CI`` set) a missing one fails the test instead of skipping it."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", PORTS[kind]), timeout=2):
        return True
    if os.environ.get("CI"):
        pytest.fail(f"CI: no {kind} server on 127.0.0.1:{PORTS[kind]} (.ci/run starts it when installed)")
    return False


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class BrokerKit:
    kind: str
    name: str = field(default_factory=lambda: f"mtlsr-test-{uuid.uuid4().hex[:12]}")
    received: list[Received] = field(default_factory=list)
    _state: dict[str, Any] = field(default_factory=dict)

    def table(self, port: int | None = None, destination: str = "bus") -> str:
        """The `[[destinations]]` entry for this kit's names on `port` (default: the broker's)."""
        port = port or PORTS[self.kind]
        head = f'\n[[destinations]]\nname = "{destination}"\ntype = "{self.kind}"\n'
        if self.kind == "rabbitmq":
            return head + (
                f'url = "amqp://127.0.0.1:{port}/"\nexchange = "{self.name}"\n'
                f'routing_key = "{self.name}.{{type}}"\ndeclare = true\nqueue = "{self.name}"\n'
                f'binding_key = "{self.name}.#"\n'
            )
        if self.kind == "nats":
            return head + (
                f'url = "nats://127.0.0.1:{port}"\nsubject = "{self.name}.{{type}}"\n'
                f'declare = true\nstream = "{self.name}"\n'
            )
        return head + f'url = "redis://127.0.0.1:{port}/0"\nstream = "{self.name}"\nmaxlen = 100000\n'

    async def read(self) -> list[Received]:
        await getattr(self, f"_read_{self.kind}")()
        return self.received

    async def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            await getattr(self, f"_cleanup_{self.kind}")()

    # --- RabbitMQ: a consumer of the queue the destination declared ---------------------------------

    async def _read_rabbitmq(self) -> None:
        import aio_pika

        if "channel" not in self._state:
            connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
            self._state["connection"], self._state["channel"] = connection, await connection.channel()
        with contextlib.suppress(Exception):  # not declared yet: nothing delivered yet
            queue = await self._state["channel"].get_queue(self.name, ensure=True)
            while (message := await queue.get(fail=False)) is not None:
                headers = {
                    k: v.decode() if isinstance(v, bytes) else str(v) for k, v in message.headers.items()
                }
                self.received.append(Received(headers, message.body))
                await message.ack()
        if self._state["channel"].is_closed:  # a passive declare of a missing queue closes it
            await self._state.pop("connection").close()
            self._state.pop("channel")

    async def _cleanup_rabbitmq(self) -> None:
        import aio_pika

        connection = self._state.get("connection") or await aio_pika.connect("amqp://127.0.0.1:5672/")
        channel = await connection.channel()
        await channel.queue_delete(self.name)
        await channel.exchange_delete(self.name)
        await connection.close()

    # --- NATS JetStream: a pull consumer of the stream the destination declared ----------------------

    async def _read_nats(self) -> None:
        import nats
        from nats.errors import TimeoutError as NatsTimeout

        if "client" not in self._state:
            self._state["client"] = await nats.connect("nats://127.0.0.1:4222")
        jetstream = self._state["client"].jetstream()
        if "subscription" not in self._state:
            try:
                await jetstream.stream_info(self.name)
            except Exception:
                return  # not declared yet: nothing delivered yet
            self._state["subscription"] = await jetstream.pull_subscribe(f"{self.name}.>", stream=self.name)
        try:  # one fetch a call: what arrived within 0.2 s (a caller polls again for more)
            messages = await self._state["subscription"].fetch(1000, timeout=0.2)
        except (NatsTimeout, TimeoutError):
            return
        for message in messages:
            self.received.append(Received(dict(message.headers or {}), message.data))
            await message.ack()

    async def _cleanup_nats(self) -> None:
        import nats

        client = self._state.get("client") or await nats.connect("nats://127.0.0.1:4222")
        await client.jetstream().delete_stream(self.name)
        await client.close()

    # --- Redis Streams: XRANGE from the last id read ----------------------------------------------

    async def _read_redis(self) -> None:
        import redis.asyncio as aioredis

        if "client" not in self._state:
            self._state["client"] = aioredis.from_url("redis://127.0.0.1:6379/0")
        last = self._state.get("last", "-")
        start = f"({last}" if last != "-" else "-"
        for entry_id, fields in await self._state["client"].xrange(self.name, start, "+"):
            decoded = {k.decode(): v for k, v in fields.items()}
            body = decoded.pop("body")
            self.received.append(Received({k: v.decode() for k, v in decoded.items()}, body))
            self._state["last"] = entry_id.decode()

    async def _cleanup_redis(self) -> None:
        import redis.asyncio as aioredis

        client = self._state.get("client") or aioredis.from_url("redis://127.0.0.1:6379/0")
        await client.delete(self.name)
        await client.aclose()
