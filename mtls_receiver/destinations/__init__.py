"""Where the forwarder delivers: HTTP, a Python handler, or a message broker (RabbitMQ, NATS
JetStream, Redis Streams), each behind :class:`Sink` (see ``base.py``).

A broker's client library is imported only when a destination names that broker: each is an
optional extra (``pip install 'mtls-receiver[rabbitmq]'``), checked when the config is loaded.
"""

from __future__ import annotations

import aiohttp

from ..config import Destination
from .base import Message, Outcome, Sink
from .handler import HandlerSink, load_handler
from .http import HttpSink

__all__ = ["Message", "Outcome", "Sink", "load_handler", "open_sink"]


def open_sink(destination: Destination, session: aiohttp.ClientSession) -> Sink:
    """The sink for one configured destination (nothing connects until its first delivery)."""
    broker = destination.broker
    if broker is None:
        if destination.url is not None:
            return HttpSink(destination.url, session)
        return HandlerSink(destination.handler or "")
    if broker.kind == "rabbitmq":
        from .rabbitmq import RabbitMQSink

        return RabbitMQSink(broker)
    if broker.kind == "nats":
        from .nats import NatsSink

        return NatsSink(broker)
    from .redis import RedisSink

    return RedisSink(broker)
