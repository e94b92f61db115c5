"""What every destination is to the forwarder: ``deliver(message) -> Outcome`` and ``close()``.

The forwarder (``forwarder.py``) owns the outbox — leases, retries, order per key, dead events —
and hands each attempt to a :class:`Sink`; a sink knows one kind of destination and nothing of
the outbox. An exception out of ``deliver`` is a failed attempt like any other, retried later.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..config import BrokerConfig

__all__ = ["BrokerSink", "Message", "Outcome", "Sink"]

log = logging.getLogger("mtls_receiver")

CLOSE_TIMEOUT = 5.0  # seconds a discarded connection gets to close politely

ClientT = TypeVar("ClientT")


@dataclass(frozen=True)
class Message:
    """One attempt's event as every destination gets it: built once, the same for HTTP and brokers.

    ``headers`` are the Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature``), signed over ``body``; empty for a destination that is not signed.
    """

    event_id: str
    envelope: dict[str, Any]
    body: bytes
    headers: dict[str, str]

    @property
    def fields(self) -> dict[str, str]:
        """What a routing key, subject or stream template may name (``TEMPLATE_FIELDS``)."""
        envelope = self.envelope
        return {"type": envelope["type"], "provider": envelope["provider"], "kind": envelope["kind"]}


@dataclass(frozen=True)
class Outcome:
    """An attempt's result: ``error`` empty when delivered; ``status_code`` only for HTTP."""

    status_code: int | None = None
    error: str = ""


class Sink(ABC):
    """One configured destination, open for the forwarder's whole life (or until a reload drops it)."""

    @abstractmethod
    async def deliver(self, message: Message) -> Outcome:
        """Deliver one event; return once the destination has it durably (or say why not)."""

    async def close(self) -> None:  # noqa: B027 (most sinks hold nothing of their own)
        """Release connections; deliveries still running may fail (and are retried)."""


class BrokerSink(Sink, Generic[ClientT]):
    """A broker connection opened on first use and opened again after it broke, by itself.

    Concurrent deliveries share one connection (each waits for its own confirmation). A failure
    that may have broken the connection discards it, so the next attempt connects afresh; a
    refusal by a healthy broker (unroutable, no stream) keeps it for the deliveries in flight.
    """

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._client: ClientT | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    async def deliver(self, message: Message) -> Outcome:
        client = await self._connected()
        try:
            await self._publish(client, message)
        except BaseException as exc:  # a time-out cancels the publish: its connection may be suspect too
            if self._breaks_connection(exc):
                self._discard(client)
            raise
        return Outcome()

    async def close(self) -> None:
        if self._client is not None:
            self._discard(self._client)
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _connected(self) -> ClientT:
        async with self._lock:
            if self._client is not None and not self._usable(self._client):
                self._discard(self._client)
            if self._client is None:
                self._client = await self._connect()
                log.info("connected to %s", self.config.describe())
            return self._client

    def _discard(self, client: ClientT) -> None:
        """Forget ``client`` and close it in the background (a broken peer must not hold up a retry)."""
        if self._client is client:
            self._client = None
        task = asyncio.create_task(self._close_quietly(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_quietly(self, client: ClientT) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._disconnect(client)
        except Exception as exc:  # it is broken already; closing it is only tidying up
            log.debug("closing %s: %s", self.config.name, exc)

    @abstractmethod
    async def _connect(self) -> ClientT:
        """Open a connection and declare what the config asks to declare."""

    @abstractmethod
    async def _disconnect(self, client: ClientT) -> None: ...

    @abstractmethod
    async def _publish(self, client: ClientT, message: Message) -> None:
        """Publish and wait until the broker has the message durably; raise if it does not."""

    def _usable(self, client: ClientT) -> bool:
        """Still worth publishing on (a client that reconnects by itself stays usable while it does)."""
        return True

    def _breaks_connection(self, exc: BaseException) -> bool:
        """Whether ``exc`` (or a cancellation: the forwarder's time-out) may have left the connection
        unusable (default: any failure may)."""
        return True
