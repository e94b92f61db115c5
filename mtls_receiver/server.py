"""The aiohttp side: one app per listener, one handler per route, store before answer."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import aiohttp
from aiohttp import web

from .addresses import client_address
from .config import Config, ListenerConfig, RouteConfig
from .errors import Refusal, StoreUnavailable
from .events import AuditRecord, IncomingRequest, Peer, Verdict
from .forwarder import Forwarder
from .listener import TLSListener
from .providers import verification_method, verifier_for
from .relay import Relayer
from .store import Receipt, Store, open_store
from .tls import ClientIdentity, client_identity, create_ssl_context

__all__ = ["Receiver", "serve_forever", "utc_now"]

log = logging.getLogger("mtls_receiver")

_NO_ROUTE = RouteConfig(path="-", listener="-", provider="-", mode="-")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Receiver:
    """Everything ``serve`` runs: the store plus one TLS listener and aiohttp app per listener."""

    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store = store or open_store(config.store)
        self._runners: list[web.AppRunner] = []
        self._listeners: dict[str, TLSListener] = {}
        self._session: aiohttp.ClientSession | None = None
        self.forwarder: Forwarder | None = None

    async def start(self) -> None:
        config = self.config
        contexts = {
            lst.name: create_ssl_context(lst, str(config.source), config.listener_key(lst.name))
            for lst in config.listeners
        }
        await self.store.open()
        self._session = aiohttp.ClientSession()
        try:
            self.forwarder = Forwarder(config, self.store, self._session)
            await self.forwarder.start()
            for listener in config.listeners:
                await self._start_listener(listener, contexts[listener.name])
        except BaseException:
            await self.stop()
            raise

    async def _start_listener(self, config: ListenerConfig, context: object) -> None:
        runner = web.AppRunner(web.Application(), access_log=None, handle_signals=False)
        tls = TLSListener(config, context, lambda: runner.server())  # type: ignore[arg-type, misc]
        assert self._session is not None and self.forwarder is not None
        shared = _Shared(self.config, self.store, Relayer(self.store, self._session), self.forwarder)
        _add_routes(runner.app, tls, self.config.routes_for(config.name), shared)
        await runner.setup()
        self._runners.append(runner)
        await tls.start()
        self._listeners[config.name] = tls
        log.info("listening on https://%s (%s, client certs %s)", tls.shown_address, config.name, config.client_certs)

    def port(self, listener: str | None = None) -> int:
        """The bound port of a listener (useful when the config asked for port 0)."""
        name = listener or self.config.listeners[0].name
        return self._listeners[name].port

    async def stop(self) -> None:
        for tls in self._listeners.values():
            await tls.stop()
        self._listeners.clear()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.forwarder is not None:
            await self.forwarder.stop()
            self.forwarder = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.store.close()


@dataclass(frozen=True)
class _Shared:
    """What every route handler of a receiver uses."""

    config: Config
    store: Store
    relayer: Relayer
    forwarder: Forwarder


def _add_routes(app: web.Application, tls: TLSListener, routes: tuple[RouteConfig, ...], shared: _Shared) -> None:
    for route in routes:
        handler = _RouteHandler(tls, route, shared).handle
        base = "" if route.path == "/" else route.path
        if base:
            app.router.add_route("*", base, handler)
        app.router.add_route("*", base + "/{tail:.*}", handler)
    app.router.add_route("*", "/{anything:.*}", _RouteHandler(tls, _NO_ROUTE, shared).handle)


class _RouteHandler:
    """Reads the request, runs the route's verifier, stores, then answers."""

    def __init__(self, tls: TLSListener, route: RouteConfig, shared: _Shared) -> None:
        self.tls, self.listener, self.route = tls, tls.config, route
        self.store, self.relayer, self.forwarder = shared.store, shared.relayer, shared.forwarder
        self.verify = verifier_for(route.provider)
        self.forwarding = shared.config.destination(route.path) is not None

    async def handle(self, request: web.Request) -> web.Response:
        identity, transport_peer = self._transport_facts(request)
        peer = Peer(transport_peer, identity)
        verdict: Verdict | None = None
        try:
            if self.route is _NO_ROUTE:
                raise Refusal(404, "not found")
            peer = Peer(client_address(transport_peer, request.headers, self.listener.trusted_proxies), identity)
            incoming = _incoming(request, await request.read(), peer)
            verdict = self.verify(self.route, incoming)
            status, reason, answer = await self._answer(incoming, verdict)
        except Refusal as refusal:
            status, reason = refusal.status, refusal.reason
            answer = web.Response(status=status, text=reason + "\n")
        except web.HTTPException as exc:  # raised by aiohttp itself, e.g. 413 body too large
            status, reason = exc.status, exc.reason
            answer = web.Response(status=status, text=reason + "\n")
        except StoreUnavailable as exc:
            return _unavailable(self.route, peer, exc)
        audit = AuditRecord(
            at=utc_now(), listener=self.listener.name, route=self.route.path, method=request.method,
            path=request.path, peer=peer.address, status=status, reason=reason, client=identity,
        )
        try:
            receipt = await self.store.record(
                self.route.provider, self.route.path, verdict.events if verdict else (), audit,
                verified_by=verification_method(self.route, identity), queue=self.forwarding,
            )
        except StoreUnavailable as exc:
            return _unavailable(self.route, peer, exc)
        if receipt.stored and self.forwarding:
            self.forwarder.wake()
        _log_request(audit, verdict, receipt, transport_peer)
        return answer

    async def _answer(self, incoming: IncomingRequest, verdict: Verdict) -> tuple[int, str, web.Response]:
        """The response for an accepted request; a relayed one is answered by the application."""
        if verdict.relay is None:
            response = web.Response(status=verdict.status, body=verdict.body, content_type="text/plain")
            return verdict.status, f"accepted {verdict.kind}", response
        relayed = await self.relayer.answer(self.route, incoming, verdict.relay)
        return relayed.status, relayed.reason, web.Response(status=relayed.status, body=relayed.body, headers=relayed.headers)

    def _transport_facts(self, request: web.Request) -> tuple[ClientIdentity | None, str]:
        """The verified client certificate, and the peer address (the PROXY header's, if one came)."""
        transport = request.transport
        if transport is None:
            return None, "unknown"
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        peername = transport.get_extra_info("peername")
        address = self.tls.source_address(transport) or (str(peername[0]) if peername else "unknown")
        return (client_identity(der) if der else None), address


def _incoming(request: web.Request, body: bytes, peer: Peer) -> IncomingRequest:
    return IncomingRequest(
        method=request.method,
        path=request.path,
        query_string=request.query_string,
        headers=dict(request.headers),
        body=body,
        peer=peer,
        now=time.time(),
        raw_target=request.raw_path,
    )


def _unavailable(route: RouteConfig, peer: Peer, exc: StoreUnavailable) -> web.Response:
    """Nothing is acknowledged unless stored: the sender is told to retry."""
    log.error("route=%s status=503 reason=%r peer=%s", route.path, f"store unavailable: {exc}", peer.address)
    return web.Response(status=503, text="store unavailable, retry later\n", headers={"Retry-After": "5"})


def _log_request(audit: AuditRecord, verdict: Verdict | None, receipt: Receipt, transport_peer: str) -> None:
    client = audit.client.short if audit.client else "client=none"
    via = f" via={transport_peer}" if transport_peer != audit.peer else ""
    if verdict is None:
        log.warning(
            "refused route=%s %s %s status=%d reason=%r peer=%s%s %s",
            audit.route, audit.method, audit.path, audit.status, audit.reason, audit.peer, via, client,
        )
    else:
        log.info(
            "accepted route=%s %s %s status=%d kind=%s stored=%d duplicates=%d peer=%s%s %s",
            audit.route, audit.method, audit.path, audit.status, verdict.kind,
            len(receipt.stored), receipt.duplicates, audit.peer, via, client,
        )


async def serve_forever(config: Config, announce: Callable[[Receiver], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM, then close listeners and the store cleanly."""
    receiver = Receiver(config)
    await receiver.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if announce is not None:
        announce(receiver)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await receiver.stop()
