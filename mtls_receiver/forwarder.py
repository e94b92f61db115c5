"""Delivering stored events to the merchant's application: at least once, in order per key.

The outbox row is written with the event, so an acknowledged event is delivered even
after a crash. Deliveries are bounded in number, retried with exponential backoff and
jitter, and marked dead past the attempt or age limit (``events replay`` re-queues).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp

from . import __version__, jsoncodec
from .config import Config, Destination, ForwardConfig
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
        module_name, _, function_name = destination.handler.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(str(config.source), key, f"cannot load {destination.handler}: {exc}") from None
        if not callable(function):
            raise ConfigError(str(config.source), key, f"{destination.handler} is not callable")
        handlers[destination.handler] = function
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
        self._handlers: dict[str, Callable[..., Any]] = {}
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
        self._handlers = resolve_handlers(self.config)
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
                if destination.url is not None:
                    return await self._post(destination.url, event)
                await self._call(self._handlers[destination.handler or ""], event)
                return None, ""
        except TimeoutError:
            return None, f"no answer within {self.policy.timeout:g}s"
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:  # a handler's own failure is a failed attempt, retried like any other
            return None, f"{type(exc).__name__}: {exc}"[:500]

    async def _post(self, url: str, event: StoredEvent) -> tuple[int, str]:
        body = envelope_bytes(event)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"mtls-receiver/{__version__}",
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": standard_webhook_signature(self.policy.secrets, event.id, timestamp, body),
        }
        async with self.session.post(url, data=body, headers=headers) as response:
            await response.read()
            if 200 <= response.status < 300:
                return response.status, ""
            return response.status, f"HTTP {response.status}"

    @staticmethod
    async def _call(function: Callable[..., Any], event: StoredEvent) -> None:
        if inspect.iscoroutinefunction(function):
            await function(envelope(event))
        else:
            await asyncio.to_thread(function, envelope(event))

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
