"""Redis Streams (redis-py asyncio): ``XADD`` to a stream, optionally capped with ``MAXLEN ~``.

Delivered means Redis answered the ``XADD``: the entry is in its memory. It survives a Redis
restart only with the append-only file on (``appendonly yes``; ``appendfsync always`` to lose
nothing, ``everysec`` loses up to a second): docs/brokers/redis.md says so, and the first
connection warns in the log when AOF is off.
"""

from __future__ import annotations

import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .base import BrokerSink, Message

__all__ = ["RedisSink"]

log = logging.getLogger("mtls_receiver")

CONNECT_TIMEOUT = 5.0


class RedisSink(BrokerSink["aioredis.Redis"]):
    """A connection pool that replaces broken connections by itself; a refused command keeps it."""

    async def _connect(self) -> aioredis.Redis:
        client = aioredis.from_url(self.config.url, socket_connect_timeout=CONNECT_TIMEOUT)
        try:
            await client.ping()
            await self._warn_without_aof(client)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                await client.aclose()
            raise
        return client

    async def _warn_without_aof(self, client: aioredis.Redis) -> None:
        try:
            answer = await client.config_get("appendonly")
        except ResponseError:  # CONFIG may be disabled (managed Redis): nothing to tell
            return
        settings = {_text(name): _text(value) for name, value in answer.items()}
        if settings.get("appendonly") == "no":
            log.warning(
                "redis %s has appendonly no: events it has are lost if Redis restarts"
                " (see docs/brokers/redis.md)",
                self.config.name,
            )

    async def _disconnect(self, client: aioredis.Redis) -> None:
        await client.aclose()

    def _breaks_connection(self, exc: BaseException) -> bool:
        return not isinstance(exc, ResponseError)

    async def _publish(self, client: aioredis.Redis, message: Message) -> None:
        fields: dict[str | bytes, str | bytes] = {"body": message.body, "content-type": "application/json"}
        fields.update(message.headers)
        await client.xadd(self.config.target(message.fields), fields, maxlen=self.config.maxlen)  # type: ignore[arg-type]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
