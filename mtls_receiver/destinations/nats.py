"""NATS JetStream (nats-py): delivered when JetStream acknowledges the publish (``PubAck``).

The event id goes as ``Nats-Msg-Id``, so JetStream drops a re-publish of the same event within
the stream's duplicate window (2 minutes by default): the common duplicate — a publish whose
acknowledgement was lost — never reaches consumers.
"""

from __future__ import annotations

import contextlib
import functools
import logging

from nats.aio.client import Client
from nats.js.api import StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ..config import BrokerConfig
from .base import BrokerSink, Message

__all__ = ["NatsSink"]

log = logging.getLogger("mtls_receiver")

CONNECT_TIMEOUT = 5  # seconds (nats-py takes whole seconds)
NO_CLIENT_TIMEOUT = 24 * 3600.0


class NatsSink(BrokerSink[tuple[Client, JetStreamContext]]):
    """One client that reconnects by itself for ever once it has connected (the forwarder's
    time-out bounds each attempt meanwhile); discarded only when it closed."""

    def __init__(self, config: BrokerConfig) -> None:
        super().__init__(config)
        self._closing_clients: set[int] = set()  # ids of clients we are closing: no warning for those

    async def _connect(self) -> tuple[Client, JetStreamContext]:
        client = Client()
        try:
            await client.connect(
                servers=[self.config.url],
                name="mtls-receiver",
                connect_timeout=CONNECT_TIMEOUT,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=self._error,
                disconnected_cb=functools.partial(self._disconnected, client),  # an async callable
            )
            jetstream = client.jetstream()
            if self.config.declare:
                await self._declare(jetstream)
        except BaseException:
            with contextlib.suppress(Exception):  # never connected: nothing to close, and no new error
                await client.close()
            raise
        return client, jetstream

    async def _declare(self, jetstream: JetStreamContext) -> None:
        """Create the stream (file storage) if it does not exist; an existing one is left as it is."""
        try:
            await jetstream.stream_info(self.config.stream)
        except NotFoundError:
            await jetstream.add_stream(
                name=self.config.stream, subjects=list(self.config.stream_subjects), storage=StorageType.FILE
            )

    async def _error(self, exc: Exception) -> None:
        log.debug("nats %s: %s", self.config.name, exc)

    async def _disconnected(self, client: Client) -> None:
        if id(client) not in self._closing_clients:  # not a close of ours
            log.warning("nats %s: disconnected, reconnecting", self.config.name)

    async def _disconnect(self, client: tuple[Client, JetStreamContext]) -> None:
        self._closing_clients.add(id(client[0]))
        try:
            await client[0].close()
        finally:
            self._closing_clients.discard(id(client[0]))

    def _usable(self, client: tuple[Client, JetStreamContext]) -> bool:
        return not client[0].is_closed

    def _breaks_connection(self, exc: BaseException) -> bool:
        return False  # the client reconnects by itself, even after a time-out; a closed one _usable replaces

    async def _publish(self, client: tuple[Client, JetStreamContext], message: Message) -> None:
        headers = {**message.headers, "Nats-Msg-Id": message.event_id, "Content-Type": "application/json"}
        subject = self.config.target(message.fields)
        # no time-out of the client's own (5 s): the forwarder's `timeout` bounds the attempt and says so
        await client[1].publish(subject, message.body, headers=headers, timeout=NO_CLIENT_TIMEOUT)
