"""Delivering stored events to the merchant's application: at least once, in order per key.

The outbox row is written with the event, so an acknowledged event is delivered even
after a crash. Deliveries are bounded in number, retried with exponential backoff and
jitter, and marked dead past the attempt or age limit (``events replay`` re-queues).
Where an attempt goes — HTTP, a Python handler, a message broker — is a :class:`Sink`
(``destinations/``): this module knows the outbox, not the destinations.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp

from . import jsoncodec
from .config import Config, Destination, ForwardConfig
from .destinations import Message, Sink, load_handler, open_sink
from .errors import ConfigError, StoreUnavailable
from .events import AttemptOutcome, DeliveryAttempt, StoredEvent
from .logs import log_fields
from .metrics import Metrics
from .signatures import standard_webhook_signature
from .store import Store

__all__ = ["Forwarder", "envelope", "envelope_bytes", "resolve_handlers"]

log = logging.getLogger("mtls_receiver")

_Finished = tuple[StoredEvent, Destination | None, AttemptOutcome]  # a delivery that ended, to record

POLL_INTERVAL = 1.0  # seconds between looks at the outbox when nothing wakes the forwarder
LEASE_MARGIN = 10.0  # a lease outlives the delivery timeout by this much


def resolve_handlers(config: Config) -> dict[str, Callable[..., Any]]:
    """Import every ``module:function`` destination; a failure names the config key."""
    named = [("forward.handler", config.forward.default)] + [
        (f"routes[{i}].forward_handler", route.forward) for i, route in enumerate(config.routes)
    ]
    handlers: dict[str, Callable[..., Any]] = {}
    for key, destination in named:
        if destination is None or destination.handler is None:
            continue
        try:
            handlers[destination.handler] = load_handler(destination.handler)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(str(config.source), key, f"cannot load {destination.handler}: {exc}") from None
        except TypeError as exc:
            raise ConfigError(str(config.source), key, str(exc)) from None
    return handlers


def envelope(event: StoredEvent) -> dict[str, Any]:
    """The stable JSON the application receives, whoever the sender was."""
    client = event.client
    return {
        "id": event.id,
        "type": f"{event.provider}.{event.kind}",
        "provider": event.provider,
        "route": event.route,
        "kind": event.kind,
        "dedup_key": event.dedup_key,
        "received_at": event.received_at,
        "sender": {
            "address": event.peer,
            "verified_by": event.verified_by,
            "client_certificate": (
                {"subject": client.subject, "issuer": client.issuer, "sha256": client.fingerprint}
                if client
                else None
            ),
        },
        "payload": event.payload,
    }


def envelope_bytes(event: StoredEvent) -> bytes:
    return jsoncodec.dumps(envelope(event)).encode()


class Forwarder:
    def __init__(
        self, config: Config, store: Store, session: aiohttp.ClientSession, metrics: Metrics | None = None
    ) -> None:
        self.config, self.store, self.session, self.metrics = config, store, session, metrics
        self._sinks: dict[Destination, Sink] = {}  # opened on first use, kept while configured
        self._sinks_for: Config | None = None  # the config whose destinations _sinks was pruned to
        self._closing: set[asyncio.Task[None]] = set()  # sinks a reload dropped, being closed
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[_Finished]] = set()
        self._finished: list[_Finished] = []  # deliveries that ended, not yet recorded

    @property
    def policy(self) -> ForwardConfig:
        return self.config.forward  # the config is replaced on reload

    @property
    def enabled(self) -> bool:
        return self.policy.default is not None or any(route.forward for route in self.config.routes)

    async def start(self) -> None:
        resolve_handlers(self.config)
        if self.enabled:
            self._loop_task = asyncio.create_task(self._run(), name="forwarder")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; give deliveries in flight ``grace`` seconds (the rest retry after restart)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._record_finished()
        sinks, self._sinks = list(self._sinks.values()), {}
        await asyncio.gather(*(sink.close() for sink in sinks), *self._closing, return_exceptions=True)

    def _sink(self, destination: Destination) -> Sink:
        """The open sink of ``destination``; after a reload, those no longer configured are closed."""
        if self._sinks_for is not self.config:
            self._sinks_for = self.config
            configured = {self.config.forward.default} | {route.forward for route in self.config.routes}
            for stale in [known for known in self._sinks if known not in configured]:
                task = asyncio.create_task(self._sinks.pop(stale).close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        sink = self._sinks.get(destination)
        if sink is None:
            sink = self._sinks[destination] = open_sink(destination, self.session)
        return sink

    async def _run(self) -> None:
        while True:
            await self._record_finished()
            free = self.policy.concurrency - len(self._in_flight)
            if free > 0:
                try:
                    due = await self.store.claim_due(time.time(), free, self.policy.timeout + LEASE_MARGIN)
                except StoreUnavailable as exc:
                    log.error("forwarder cannot read the outbox: %s", exc)
                    due = []
                for event in due:
                    task = asyncio.create_task(self._deliver(event))
                    self._in_flight.add(task)
                    task.add_done_callback(self._delivered)
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
            except TimeoutError:
                pass
            self._wake.clear()

    def _delivered(self, task: asyncio.Task[_Finished]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled():
            if task.exception() is None:
                self._finished.append(task.result())
            else:  # a bug: the lease runs out and the event is tried again
                log.error("delivery failed unexpectedly", exc_info=task.exception())
        self.wake()  # a slot is free; a successor with the same order key may be due once this is recorded

    async def _record_finished(self) -> None:
        """Record every delivery that ended since the last look, in one transaction.

        Deliveries end at about the same time under load: one transaction for all of them
        instead of one each keeps the outbox's bookkeeping off the store's write lock.
        """
        finished, self._finished = self._finished, []
        if not finished:
            return
        try:
            superseded = set(await self.store.finish_attempts([outcome for _, _, outcome in finished]))
        except StoreUnavailable as exc:  # the leases run out and the events are tried again
            log.error("could not record %d deliveries: %s", len(finished), exc)
            return
        for event, destination, outcome in finished:
            if outcome.event_id in superseded:
                self._log_superseded(event, destination, outcome)
                label = "superseded"
            else:
                self._log(event, destination, outcome)
                label = "retry" if outcome.status == "pending" else outcome.status
            if self.metrics is not None:
                self.metrics.deliveries.labels(label).inc()
                where = destination.label if destination else "nowhere"
                self.metrics.destination_deliveries.labels(where, label).inc()

    async def _deliver(self, event: StoredEvent) -> _Finished:
        number = event.attempts + 1
        started = time.monotonic()
        at = datetime.now().astimezone().isoformat(timespec="milliseconds")
        destination = self.config.destination(event.route)
        status_code, error = await self._attempt(destination, event)
        attempt = DeliveryAttempt(number, at, round((time.monotonic() - started) * 1000), status_code, error)
        status, next_at = self._outcome(event, attempt)
        return event, destination, AttemptOutcome(event.id, attempt, status, next_at, event.lease_token)

    async def _attempt(self, destination: Destination | None, event: StoredEvent) -> tuple[int | None, str]:
        """One try: (HTTP status or None, error text; empty when delivered)."""
        if destination is None:
            return None, "no forward destination configured for this route"
        try:
            async with asyncio.timeout(self.policy.timeout):
                outcome = await self._sink(destination).deliver(self._message(event, destination))
                return outcome.status_code, outcome.error
        except TimeoutError:
            return None, f"no answer within {self.policy.timeout:g}s"
        except Exception as exc:  # a refusal, a lost connection, a handler's own failure: retried alike
            return None, f"{type(exc).__name__}: {exc}"[:500]

    def _message(self, event: StoredEvent, destination: Destination) -> Message:
        """The envelope, its bytes and (for a signed destination) the Standard Webhooks headers."""
        content = envelope(event)
        body = jsoncodec.dumps(content).encode()
        headers: dict[str, str] = {}
        if destination.signed:
            timestamp = int(time.time())
            signature = standard_webhook_signature(self.policy.secrets, event.id, timestamp, body)
            headers = {
                "webhook-id": event.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature,
            }
        return Message(event.id, content, body, headers)

    def _outcome(self, event: StoredEvent, attempt: DeliveryAttempt) -> tuple[str, float]:
        """delivered; dead past the limits; else pending with exponential backoff and jitter."""
        now = time.time()
        if not attempt.error:
            return "delivered", now
        age = now - datetime.fromisoformat(event.received_at).timestamp()
        if attempt.number >= self.policy.max_attempts or age >= self.policy.max_age:
            return "dead", now
        delay = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (attempt.number - 1))
        return "pending", now + delay * random.uniform(0.5, 1.0)

    @staticmethod
    def _log_superseded(event: StoredEvent, destination: Destination | None, outcome: AttemptOutcome) -> None:
        """An attempt that outlived its lease (or was replayed meanwhile): its result is not the event's."""
        target = destination.describe() if destination else "nowhere"
        result = outcome.attempt.error or "delivered"
        log.warning(
            "forward attempt superseded event=%s to=%s attempt=%d result=%r: its lease was taken over"
            " or the event replayed; not recorded",
            event.id,
            target,
            outcome.attempt.number,
            result,
        )

    @staticmethod
    def _log(event: StoredEvent, destination: Destination | None, outcome: AttemptOutcome) -> None:
        fields = {
            "event": event.id,
            "to": destination.describe() if destination else "nowhere",
            "attempt": outcome.attempt.number,
        }
        if outcome.status == "delivered":
            log_fields(
                log,
                logging.INFO,
                "forwarded",
                fields | {"status": outcome.attempt.status_code, "ms": outcome.attempt.duration_ms},
            )
        elif outcome.status == "dead":
            log_fields(log, logging.ERROR, "forwarding gave up", fields | {"error": outcome.attempt.error})
        else:
            retry_in = round(outcome.next_attempt_at - time.time(), 1)
            log_fields(
                log,
                logging.WARNING,
                "forward failed",
                fields | {"error": outcome.attempt.error, "retry_in": retry_in},
            )
