"""Request dispatch: find the route, verify, store, then answer; one log line per request.

The hot path. A :class:`Dispatcher` is one listener's request handler; it reads the receiver's
parts (:class:`Host`) at every request, because a reload replaces the routes and a start or a stop
sets the forwarder and the relayer. Nothing is acknowledged before it is stored: a store that fails
or does not answer within the handling deadline gets the sender a 503, and the sender retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from .addresses import client_address
from .config import Config, RouteConfig
from .errors import Refusal, StaleKeys, StoreUnavailable
from .events import AuditRecord, IncomingRequest, Peer, Verdict
from .forwarder import Forwarder
from .http11 import Response
from .listener import Request, TLSListener
from .logs import client_fields, log_fields
from .metrics import Metrics, refusal_class
from .pinning import check_client_pin
from .providers import Verifier, verification_method, verifier_for
from .relay import Relayer
from .store import Receipt, Store
from .store.audit import RefusalCoalescer
from .tls import client_identity

__all__ = ["Dispatcher", "Host", "Routes", "handling_deadline", "utc_now"]

log = logging.getLogger("mtls_receiver")

_second: tuple[int, str] = (0, "")


def utc_now() -> str:
    """Now in UTC as ISO 8601 with milliseconds (the date and time formatted once per second)."""
    global _second
    now = time.time()
    second = int(now)
    if _second[0] != second:
        _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((now - second) * 1000):03d}+00:00"


def handling_deadline(handling_timeout: float, routes: Iterable[RouteConfig]) -> float:
    """Seconds a request on a listener serving ``routes`` may take from its last byte to its answer.

    A relaying route also waits for the application, which has its own deadline (answered with
    the configured rejection): the longest such wait is added, so this deadline never cuts it short."""
    return handling_timeout + max(
        (route.relay.deadline for route in routes if route.relay is not None), default=0.0
    )


@dataclass(frozen=True, slots=True)
class _Route:
    """A configured route as requests meet it: its path prefix, verifier, and whether it forwards."""

    config: RouteConfig
    base: str  # "" for "/": every path falls under it
    verify: Verifier
    forwarding: bool


_NOTHING_STORED = Receipt(stored=(), duplicates=0)
_NO_ROUTE = _Route(RouteConfig(path="-", listener="-", provider="-", mode="-"), "-", verifier_for("-"), False)


class Routes:
    """Each listener's routes, with their verifier and whether they forward, worked out once per config."""

    def __init__(self, config: Config) -> None:
        self._by_listener = {
            listener.name: [
                _Route(
                    r,
                    "" if r.path == "/" else r.path,
                    verifier_for(r.provider),
                    config.destination(r.path) is not None,
                )
                for r in config.routes_for(listener.name)
            ]
            for listener in config.listeners
        }

    def find(self, listener: str, path: str) -> _Route:
        """The route a request path falls under, or one that answers 404."""
        for route in self._by_listener[listener]:
            if path == route.base or path.startswith(route.base + "/"):
                return route
        return _NO_ROUTE


class Host(Protocol):
    """What a dispatcher uses of the receiver it runs in (:class:`~.lifecycle.Receiver`)."""

    in_flight: int  # requests inside a handler: a graceful stop waits for them
    routes: Routes  # the routes in force now (a reload replaces them)
    store: Store
    metrics: Metrics
    coalescer: RefusalCoalescer
    forwarder: Forwarder | None  # woken when an event to forward is stored
    relayer: Relayer | None  # answers synchronous requests with the application's answer


class Dispatcher:
    """One listener's requests: find the route, verify, store, then answer."""

    def __init__(self, receiver: Host, listener: str) -> None:
        self.receiver, self.listener = receiver, listener
        self.tls: TLSListener

    async def __call__(self, request: Request) -> Response:
        self.receiver.in_flight += 1
        try:
            head = request.head
            route = self.receiver.routes.find(self.listener, head.path) if head is not None else _NO_ROUTE
            return await self._handle(request, route)
        finally:
            self.receiver.in_flight -= 1

    async def _handle(self, request: Request, route: _Route) -> Response:
        started = time.perf_counter()
        head, der = request.head, request.client_der
        identity = client_identity(der) if der else None
        peer = Peer(request.peer, identity)
        verdict: Verdict | None = None
        try:
            if request.refusal is not None:  # the connection refused it: malformed, too large, too slow
                raise request.refusal
            assert head is not None
            if route is _NO_ROUTE:
                raise Refusal(404, "not found")
            if head.method != "POST":  # every sender POSTs; nothing else reads a body
                raise Refusal(405, f"method {head.method} not allowed; senders POST")
            if der and not self.tls.still_trusted(request.context, der):
                raise Refusal(403, "certificate: no longer trusted after a configuration reload")
            config = self.tls.config  # the listener's, as last reloaded
            peer = Peer(
                client_address(
                    request.peer,
                    head.raw_headers,
                    config.trusted_proxies,
                    config.client_address_header,
                    config.proxy_hops,
                ),
                identity,
            )
            incoming = IncomingRequest(
                method=head.method,
                path=head.path,
                query_string=head.query_string,
                headers=head.headers,
                body=request.body,
                peer=peer,
                now=time.time(),
                raw_target=head.target,
            )
            if route.config.client_pin is not None:  # every provider's routes: before its verifier
                check_client_pin(route.config.client_pin, identity)
            verdict = await _verified(route, incoming)
            status, reason, answer = await self._answer(route.config, incoming, verdict)
        except Refusal as refusal:
            status, reason = refusal.status, refusal.reason
            headers = dict(refusal.headers) or None
            answer = Response.text(status, reason, close=request.refusal is not None, headers=headers)
        except StoreUnavailable as exc:
            return self._unavailable(route.config, peer, exc)
        audit = AuditRecord(
            at=utc_now(),
            listener=self.listener,
            route=route.config.path,
            method=head.method if head else "-",
            path=head.path if head else "-",
            peer=peer.address,
            status=status,
            reason=reason,
            client=identity,
        )
        try:
            receipt = await self._record(route, verdict, audit)
        except StoreUnavailable as exc:
            return self._unavailable(route.config, peer, exc)
        if receipt.stored and route.forwarding and self.receiver.forwarder is not None:
            self.receiver.forwarder.wake()
        self._count(route.config, verdict, status, reason, time.perf_counter() - started)
        _log_request(audit, verdict, receipt, request.peer)
        return answer

    async def _record(self, route: _Route, verdict: Verdict | None, audit: AuditRecord) -> Receipt:
        """Events and audit row, durably; a refusal repeated within the coalescer's window is only counted."""
        coalescer = self.receiver.coalescer
        if verdict is None and coalescer.repeat(audit):
            return _NOTHING_STORED
        receipt = await self.receiver.store.record(
            route.config.provider,
            route.config.path,
            verdict.events if verdict else (),
            audit,
            verified_by=verification_method(route.config, audit.client),
            queue=route.forwarding,
        )
        if verdict is None:
            coalescer.written(audit)
        return receipt

    async def _answer(
        self, route: RouteConfig, incoming: IncomingRequest, verdict: Verdict
    ) -> tuple[int, str, Response]:
        """The response for an accepted request; a relayed one is answered by the application."""
        if verdict.relay is None:
            answer = Response(verdict.status, verdict.body, content_type="text/plain")
            return verdict.status, f"accepted {verdict.kind}", answer
        assert self.receiver.relayer is not None
        relayed = await self.receiver.relayer.answer(route, incoming, verdict.relay)
        return relayed.status, relayed.reason, Response(relayed.status, relayed.body, headers=relayed.headers)

    def _count(
        self, route: RouteConfig, verdict: Verdict | None, status: int, reason: str, seconds: float
    ) -> None:
        metrics = self.receiver.metrics
        metrics.count_request(route.path, route.provider, "accepted" if verdict else "refused", seconds)
        if verdict is None:
            metrics.refusals.labels(route.path, refusal_class(status, reason)).inc()

    def _unavailable(self, route: RouteConfig, peer: Peer, exc: StoreUnavailable) -> Response:
        """Nothing is acknowledged unless stored: the sender is told to retry."""
        sender = {"peer": peer.address, **client_fields(peer.identity)}
        return self._retry_later(route, f"store unavailable: {exc}", sender, "store unavailable, retry later")

    def late(self, request: Request) -> Response:
        """The handling deadline passed (a store that does not answer): 503, and the sender retries.

        The listener enforces the deadline (its one timer for every connection's phase, not a timer
        per request) and cancels the handling. Whatever was queued may still be committed later; the
        retry is then dropped as a duplicate and answered 2xx."""
        head = request.head
        found = self.receiver.routes.find(self.listener, head.path) if head is not None else _NO_ROUTE
        reason = f"no answer within {self.tls.handling_timeout:g}s (limits.handling_timeout)"
        return self._retry_later(
            found.config, reason, {"peer": request.peer}, "not handled in time, retry later"
        )

    def _retry_later(
        self, route: RouteConfig, reason: str, sender: Mapping[str, object], answer: str
    ) -> Response:
        """503 with ``Retry-After``: counted and logged, not audited (the audit row would wait for the
        same store that failed)."""
        self.receiver.metrics.requests.labels(route.path, route.provider, "unavailable").inc()
        fields = {"listener": self.listener, "route": route.path, "status": 503, "reason": reason, **sender}
        log_fields(log, logging.ERROR, "unavailable", fields)
        return Response.text(503, answer, headers={"Retry-After": "5"})


async def _verified(route: _Route, incoming: IncomingRequest) -> Verdict:
    """The route's verdict; when its signature matched no public key held and the keys can be fetched
    again, once more after a (rate-limited, shared) fetch that brought new keys."""
    try:
        return route.verify(route.config, incoming)
    except StaleKeys as stale:
        try:
            refreshed = await stale.source.refresh()
        except Exception as exc:  # fail closed: a fetch that went wrong lets nothing in
            log.warning("public keys: refresh from %s failed: %s", stale.source.description, exc)
            refreshed = False
        if not refreshed:
            raise
    return route.verify(route.config, incoming)


def _log_request(audit: AuditRecord, verdict: Verdict | None, receipt: Receipt, transport_peer: str) -> None:
    """One line per request; everything in it but the word in front is a field (escaped when written)."""
    level = logging.INFO if verdict else logging.WARNING
    if not log.isEnabledFor(level):
        return
    fields: dict[str, object] = {
        "listener": audit.listener,
        "route": audit.route,
        "method": audit.method,
        "path": audit.path,
        "status": audit.status,
    }
    if verdict is None:
        fields["reason"] = audit.reason
    else:
        fields.update(kind=verdict.kind, stored=len(receipt.stored), duplicates=receipt.duplicates)
    log_fields(
        log,
        level,
        "accepted" if verdict else "refused",
        fields | _peer_fields(audit.peer, transport_peer) | client_fields(audit.client),
    )


def _peer_fields(peer: str, transport_peer: str) -> dict[str, object]:
    """The client's address; ``via`` the proxy it came through, when a trusted proxy named it."""
    return {"peer": peer} if transport_peer == peer else {"peer": peer, "via": transport_peer}
