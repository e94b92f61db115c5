"""RabbitMQ (aio-pika): persistent messages, publisher confirms, mandatory publishing.

Delivered means the broker confirmed the message (``basic.ack``): with a durable queue and a
persistent message that is after it is written to disk. An unroutable message (no queue bound
for its routing key) comes back as ``basic.return`` and a ``basic.nack`` raises: both are failed
attempts, retried like an HTTP 503, never a silent drop.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from .base import BrokerSink, Message

__all__ = ["RabbitMQSink"]

CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class _Client:
    connection: AbstractConnection
    channel: AbstractChannel
    exchange: AbstractExchange


class RabbitMQSink(BrokerSink[_Client]):
    async def _connect(self) -> _Client:
        connection = await aio_pika.connect(self.config.url, timeout=CONNECT_TIMEOUT)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            return _Client(connection, channel, await self._exchange(channel))
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                await connection.close()
            raise

    async def _exchange(self, channel: AbstractChannel) -> AbstractExchange:
        """The exchange published to: declared durable when asked, else it must exist already."""
        config = self.config
        if not config.exchange:
            exchange = channel.default_exchange
        elif config.declare:
            kind = aio_pika.ExchangeType(config.exchange_type)
            exchange = await channel.declare_exchange(config.exchange, kind, durable=True)
        else:
            exchange = await channel.get_exchange(config.exchange, ensure=True)
        if config.declare and config.queue:
            queue = await channel.declare_queue(config.queue, durable=True)
            if config.exchange:
                await queue.bind(exchange, config.binding_key)
        return exchange

    async def _disconnect(self, client: _Client) -> None:
        await client.connection.close()

    def _usable(self, client: _Client) -> bool:
        return not client.connection.is_closed and not client.channel.is_closed

    def _breaks_connection(self, exc: BaseException) -> bool:
        # unroutable or nacked: the broker is fine and the channel stays open
        return not isinstance(exc, aio_pika.exceptions.PublishError | aio_pika.exceptions.DeliveryError)

    async def _publish(self, client: _Client, message: Message) -> None:
        envelope = message.envelope
        await client.exchange.publish(
            aio_pika.Message(
                message.body,
                headers=dict(message.headers),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.event_id,
                type=envelope["type"],
            ),
            routing_key=self.config.target(message.fields),
            mandatory=True,
        )
