"""The aiohttp side: one app per listener, one handler per route, store before answer."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from datetime import datetime, timezone

from aiohttp import web

from .config import Config, ListenerConfig, RouteConfig
from .errors import Refusal, StoreUnavailable
from .events import AuditRecord, IncomingRequest, Peer, Verdict
from .providers import verifier_for
from .store import Receipt, Store, open_store
from .tls import client_identity, create_ssl_context

__all__ = ["Receiver", "serve_forever", "utc_now"]

log = logging.getLogger("mtls_receiver")

_NO_ROUTE = RouteConfig(path="-", listener="-", provider="-", mode="-")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Receiver:
    """Everything ``serve`` runs: the store plus one TLS site per listener."""

    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store = store or open_store(config.store)
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        config = self.config
        contexts = {
            lst.name: create_ssl_context(lst, str(config.source), config.listener_key(lst.name))
            for lst in config.listeners
        }
        await self.store.open()
        try:
            for listener in self.config.listeners:
                await self._start_listener(listener, contexts[listener.name])
        except BaseException:
            await self.stop()
            raise

    async def _start_listener(self, listener: ListenerConfig, context: ssl.SSLContext) -> None:
        app = _build_app(listener, self.config.routes_for(listener.name), self.store)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, listener.host, listener.port, ssl_context=context, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("listening on https://%s (%s, client certs %s)", shown, listener.name, listener.client_certs)

    def port(self, listener: str | None = None) -> int:
        """The bound port of a listener (useful when the config asked for port 0)."""
        index = 0 if listener is None else [lst.name for lst in self.config.listeners].index(listener)
        return int(self._runners[index].addresses[0][1])

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.store.close()


def _build_app(listener: ListenerConfig, routes: tuple[RouteConfig, ...], store: Store) -> web.Application:
    app = web.Application()
    for route in routes:
        handler = _RouteHandler(listener, route, store).handle
        base = "" if route.path == "/" else route.path
        if base:
            app.router.add_route("*", base, handler)
        app.router.add_route("*", base + "/{tail:.*}", handler)
    app.router.add_route("*", "/{anything:.*}", _RouteHandler(listener, _NO_ROUTE, store).handle)
    return app


class _RouteHandler:
    """Reads the request, runs the route's verifier, stores, then answers."""

    def __init__(self, listener: ListenerConfig, route: RouteConfig, store: Store) -> None:
        self.listener, self.route, self.store = listener, route, store
        self.verify = verifier_for(route.provider)

    async def handle(self, request: web.Request) -> web.Response:
        peer = _peer(request)
        verdict: Verdict | None = None
        try:
            if self.route is _NO_ROUTE:
                raise Refusal(404, "not found")
            body = await request.read()
            verdict = self.verify(self.route, _incoming(request, body, peer))
            status, reason = verdict.status, f"accepted {verdict.kind}"
        except Refusal as refusal:
            status, reason = refusal.status, refusal.reason
        except web.HTTPException as exc:  # raised by aiohttp itself, e.g. 413 body too large
            status, reason = exc.status, exc.reason
        audit = AuditRecord(
            at=utc_now(), listener=self.listener.name, route=self.route.path, method=request.method,
            path=request.path, peer=peer.address, status=status, reason=reason, client=peer.identity,
        )
        try:
            receipt = await self.store.record(
                self.route.provider, self.route.path, verdict.events if verdict else (), audit
            )
        except StoreUnavailable as exc:
            log.error("route=%s status=503 reason=%r peer=%s", self.route.path, f"store unavailable: {exc}", peer.address)
            return web.Response(status=503, text="store unavailable, retry later\n", headers={"Retry-After": "5"})
        _log_request(audit, verdict, receipt)
        if verdict is None:
            return web.Response(status=status, text=reason + "\n")
        return web.Response(status=verdict.status, body=verdict.body, content_type="text/plain")


def _peer(request: web.Request) -> Peer:
    transport = request.transport
    address = "unknown"
    identity = None
    if transport is not None:
        peername = transport.get_extra_info("peername")
        if peername:
            address = str(peername[0])
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            identity = client_identity(der)
    return Peer(address=address, identity=identity)


def _incoming(request: web.Request, body: bytes, peer: Peer) -> IncomingRequest:
    return IncomingRequest(
        method=request.method,
        path=request.path,
        query_string=request.query_string,
        headers=dict(request.headers),
        body=body,
        peer=peer,
    )


def _log_request(audit: AuditRecord, verdict: Verdict | None, receipt: Receipt) -> None:
    client = audit.client.short if audit.client else "client=none"
    if verdict is None:
        log.warning(
            "refused route=%s %s %s status=%d reason=%r peer=%s %s",
            audit.route, audit.method, audit.path, audit.status, audit.reason, audit.peer, client,
        )
    else:
        log.info(
            "accepted route=%s %s %s status=%d kind=%s stored=%d duplicates=%d peer=%s %s",
            audit.route, audit.method, audit.path, audit.status, verdict.kind,
            len(receipt.stored), receipt.duplicates, audit.peer, client,
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
