"""One receiver process from start to stop: its parts, its role, reloads, signals, sockets.

A :class:`Receiver` opens the store, starts the forwarder, the TLS listeners (each with a
:class:`~.dispatch.Dispatcher`) and the admin port, as its :class:`Role` says: everything
(``workers = 1``), a supervisor's share or a worker's (see :mod:`.workers`). It reloads on
SIGHUP without dropping a connection, answers readiness probes, and on SIGTERM stops accepting
and lets requests in flight finish, within a deadline for every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import aiohttp
from aiohttp import web

from .admission import ConnectionTable
from .config import AdminConfig, Config, ListenerConfig, load_config
from .console import add_console
from .dispatch import Dispatcher, Routes, handling_deadline
from .errors import ConfigError, ReceiverError, StoreUnavailable
from .forwarder import Forwarder
from .listener import TLSListener
from .metrics import Metrics, SampleKey, admin_app
from .relay import Relayer
from .store import Access, Store, open_store
from .store.audit import AuditRetention, RefusalCoalescer
from .systemd import Notifier, listen_sockets
from .tls import create_ssl_context, read_certificates

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "PROBE_TIMEOUT",
    "SHUTDOWN_GRACE",
    "SINGLE",
    "SUPERVISOR",
    "WORKER",
    "Receiver",
    "Role",
    "Workers",
    "bind_errors",
    "inherit_public_keys",
    "load_public_keys",
    "check_reloadable",
    "expiry_warnings",
    "match_sockets",
    "serve_forever",
    "serve_until_stopped",
]

log = logging.getLogger("mtls_receiver")

EXPIRY_WARNING_DAYS = 21
SHUTDOWN_GRACE = 15.0  # seconds in-flight requests get to finish on SIGTERM
PROBE_TIMEOUT = 10.0  # seconds a write probe may take; longer counts as "cannot commit"


@dataclass(frozen=True)
class Role:
    """Which parts of the receiver one process runs: all of them, or its share among workers."""

    listen: bool = True  # serve the TLS listeners
    forward: bool = True  # run the forwarder: one process per inbox leases the outbox
    admin: AdminConfig | None = None  # where the admin port listens (None: the config's)


SINGLE = Role()
SUPERVISOR = Role(listen=False)  # forwards, serves the admin port, watches the workers
#: a worker's admin port is for the supervisor's heartbeats and scrapes
WORKER = Role(forward=False, admin=AdminConfig(host="127.0.0.1", port=0))


class Workers(Protocol):
    """What a supervisor's receiver asks of its worker processes (:class:`~.workers.WorkerPool`)."""

    @property
    def ready(self) -> bool:
        """Every worker serves and answered its recent heartbeats "ready"."""

    async def scrape(self) -> dict[SampleKey, float]:
        """The workers' request and handshake counts, added up."""

    def summary(self) -> str:
        """Where the workers listen, and how many there are."""


class Receiver:
    """Everything ``serve`` runs: the store, the forwarder, one TLS listener per listener, the admin port."""

    def __init__(self, config: Config, store: Store | None = None, role: Role = SINGLE) -> None:
        self.config = config
        self.role = role
        self.store = store or open_store(config.store, Access.FORWARD if role.forward else Access.SERVE)
        self.metrics = Metrics()
        self.workers: Workers | None = None  # set by the supervisor of several worker processes
        self.connections: ConnectionTable | None = None  # a worker's: connections counted over all workers
        self.worker_index = 0  # a worker's row in ``connections``
        self._listeners: dict[str, TLSListener] = {}
        self._admin: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.forwarder: Forwarder | None = None
        self.relayer: Relayer | None = None
        self.in_flight = 0  # requests inside a handler (a graceful stop waits for them and partial ones)
        self._committed_at: float | None = None  # a worker: its last write probe committed then
        self._prober: asyncio.Task[None] | None = None
        self.coalescer = RefusalCoalescer(self.store)  # repeated refusals: a count, not a row each
        # one process per inbox purges old audit rows: the one that forwards
        self.retention = (
            AuditRetention(self.store, lambda: self.config.store.audit_retention_days)
            if role.forward
            else None
        )

    async def start(self, inherited: dict[str, socket.socket] | None = None) -> None:
        contexts = self._contexts(self.config)
        self._certificates_changed()
        self._warn_of_routes()
        await self.store.open()
        self._session = aiohttp.ClientSession()
        try:
            self.coalescer.start()
            if self.retention is not None:
                self.retention.start()
            self.relayer = Relayer(self.store, self._session)
            if self.role.forward:
                self.forwarder = Forwarder(self.config, self.store, self._session, self.metrics)
                await self.forwarder.start()
            if self.role.listen:
                await load_public_keys(self.config, self.metrics)
            sockets = match_sockets(self.config, inherited or {})
            for listener in self.config.listeners if self.role.listen else ():
                key = f"{self.config.listener_key(listener.name)}.address"
                with bind_errors(self.config, key, listener.address):
                    await self._start_listener(listener, contexts[listener.name], sockets.get(listener.name))
            if self.role is WORKER:  # the first probe before the worker reports it serves
                self._committed_at = time.monotonic() if await self.can_commit() else None
                self._prober = asyncio.create_task(self._probe_writes())
            admin = self.role.admin or self.config.admin
            with bind_errors(self.config, "admin.address", f"{admin.host}:{admin.port}"):
                await self._start_admin(admin)
        except BaseException:
            await self.stop()
            raise

    def _warn_of_routes(self) -> None:
        """What check-config warns of (an unsigned route, a trusted local dev signing key), in the log
        of the server running with it; once, by the supervisor or the single process."""
        if self.role is WORKER:
            return
        for route in self.config.routes:
            for warning in route.options.warnings():
                log.warning("route %s: %s", route.path, warning)

    def _certificates_changed(self) -> None:
        try:
            self.metrics.certificates(self.config)
            warnings = expiry_warnings(self.config)
        except (ValueError, OSError) as exc:  # a file changed again since the contexts were built
            log.warning("could not read certificate dates: %s", exc)
            return
        for warning in warnings:
            log.warning(warning)

    @staticmethod
    def _contexts(config: Config) -> dict[str, ssl.SSLContext]:
        return {
            lst.name: create_ssl_context(lst, str(config.source), config.listener_key(lst.name))
            for lst in config.listeners
        }

    @staticmethod
    def _handling_grace(config: Config, listener: ListenerConfig) -> float:
        """What the listener's routes add to its ``handling_timeout`` (a relaying route's own wait)."""
        handling_timeout = listener.limits.handling_timeout
        return handling_deadline(handling_timeout, config.routes_for(listener.name)) - handling_timeout

    async def _start_listener(
        self, config: ListenerConfig, context: ssl.SSLContext, sock: socket.socket | None
    ) -> None:
        failures = self.metrics.handshake_failures
        dispatcher = Dispatcher(self, config.name)
        counts = None
        if self.connections is not None:
            listener = [item.name for item in self.config.listeners].index(config.name)
            counts = self.connections.counts(listener, self.worker_index)
        tls = TLSListener(
            config,
            context,
            dispatcher,
            sock,
            on_refused=lambda reason: failures.labels(config.name, reason).inc(),
            counts=counts,
            on_late=dispatcher.late,
            handling_grace=self._handling_grace(self.config, config),
        )
        dispatcher.tls = tls
        await tls.start()
        self._listeners[config.name] = tls
        if self.role is not WORKER:  # the supervisor says it once all its workers listen
            log.info(
                "listening on https://%s (%s, client certs %s, %s)",
                tls.shown_address,
                config.name,
                config.client_certs,
                "inherited socket" if sock else "bound",
            )

    async def _start_admin(self, admin: AdminConfig) -> None:
        if not admin.enabled:
            return
        app = admin_app(self.render_metrics, self.ready)
        if self.role is not WORKER:  # a worker's admin port is its supervisor's, for heartbeats
            add_console(app, self)
        self._admin = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._admin.setup()
        await web.TCPSite(self._admin, admin.host, admin.port).start()
        if self.role is WORKER:
            log.debug("admin (metrics, health) on http://%s:%d", admin.host, self.admin_port)
            return
        access = f"token required, {admin.token_source}" if admin.token else "no token: loopback only"
        log.info(
            "admin (metrics, health) on http://%s:%d; console at / (%s)", admin.host, self.admin_port, access
        )

    @property
    def admin_port(self) -> int:
        assert self._admin is not None, "admin listener disabled"
        return int(self._admin.addresses[0][1])

    async def render_metrics(self) -> bytes:
        """This process's metrics; the supervisor's add up its workers' request and handshake counts."""
        await self._refresh_metrics()
        if self.workers is None:
            return self.metrics.render()
        return self.metrics.render(await self.workers.scrape())

    async def _refresh_metrics(self) -> None:
        self.metrics.refresh_expiry()
        try:
            stats = await self.store.stats()
        except StoreUnavailable:
            return
        self.metrics.events.set(stats.get("events", 0))
        for status in ("pending", "delivered", "dead"):
            self.metrics.outbox.labels(status).set(stats.get(status, 0))

    async def ready(self) -> bool:
        """Ready means requests sent now get answered and committed to the inbox.

        A supervisor is ready when every worker answered its last heartbeats "ready". A worker answers
        from its last write probe, without any I/O: the heartbeat measures whether its event loop
        answers, so a slow disk cannot make a live worker look hung. One process probes on demand.
        """
        if self.workers is not None:
            return self.workers.ready
        if not self._listeners:
            return False
        if self.role is WORKER:
            fresh = self.config.health.heartbeat_interval + PROBE_TIMEOUT  # the probe loop runs this often
            return self._committed_at is not None and time.monotonic() - self._committed_at <= fresh
        return await self.can_commit()

    async def can_commit(self) -> bool:
        """The store commits a write now (through its writer, as requests are), within PROBE_TIMEOUT."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                return await self.store.check_writable()
        except TimeoutError:
            log.warning("store write probe: no answer within %gs", PROBE_TIMEOUT)
        except Exception as exc:  # fail closed: whatever went wrong, this store is not known to commit
            log.warning("store write probe failed: %s", exc)
        return False

    async def _probe_writes(self) -> None:
        """A worker's write probe, once per heartbeat interval; its result is what /readyz answers."""
        while True:
            self._committed_at = time.monotonic() if await self.can_commit() else None
            await asyncio.sleep(self.config.health.heartbeat_interval)

    def port(self, listener: str | None = None) -> int:
        """The bound port of a listener (useful when the config asked for port 0)."""
        return self._listeners[listener or self.config.listeners[0].name].port

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        """The routes are worked out once per config: a reload replaces them for the next request."""
        self._config = config
        self.routes = Routes(config)

    async def reload(self) -> bool:
        """Re-read the config and TLS material; apply to new handshakes, or keep the old and say why."""
        try:
            config = load_config(self.config.source)
            check_reloadable(self.config, config)
            contexts = self._contexts(config)
        except ReceiverError as exc:
            log.error("reload rejected, still serving the previous configuration: %s", exc)
            return False
        if self.role.listen:
            inherit_public_keys(self.config, config)
            await load_public_keys(config, self.metrics)
        for listener in config.listeners:
            if listener.name in self._listeners:
                self._listeners[listener.name].swap(
                    listener, contexts[listener.name], self._handling_grace(config, listener)
                )
        self.config = config
        if self.forwarder is not None:
            self.forwarder.config = config
        self._certificates_changed()
        self._warn_of_routes()
        log.info("reloaded %s", config.source)
        return True

    def summary(self) -> str:
        if self.workers is not None:
            return f"{self.workers.summary()}; {len(self.config.routes)} route(s)"
        addresses = ", ".join(tls.shown_address for tls in self._listeners.values())
        return f"listening on {addresses}; {len(self.config.routes)} route(s)"

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then close the store.

        Every step has a deadline: a stop must end even if a connection or a delivery hangs.
        """
        listeners = list(self._listeners.values())
        self._listeners.clear()
        for tls in listeners:
            await _bounded(tls.stop(), 5, f"stopping listener {tls.config.name}")
        deadline = time.monotonic() + grace
        while (self.in_flight or any(tls.busy for tls in listeners)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for tls in listeners:
            tls.close_all()
        if self._admin is not None:
            await _bounded(self._admin.cleanup(), 5, "closing the admin listener")
            self._admin = None
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None
        if self.forwarder is not None:
            await _bounded(self.forwarder.stop(), 10, "stopping the forwarder")
            self.forwarder = None
        if self._session is not None:
            await _bounded(self._session.close(), 5, "closing the HTTP client")
            self._session = None
        if self.retention is not None:
            await self.retention.stop()
        await _bounded(self.coalescer.stop(), 5, "writing the counts of repeated refusals")
        await self.store.close()


async def load_public_keys(config: Config, metrics: Metrics) -> None:
    """Fetch every route's public keys from its sender, all at once (each fetch has its own timeout).

    A failure is a one-line warning, not a stop: the route keeps whatever keys it holds (none: its
    requests are answered 503 until a later fetch succeeds), and nothing is let in unverified."""
    sources = [(route, source) for route in config.routes for source in route.options.key_sources()]
    for route, source in sources:
        source.observe(_fetch_counter(metrics, route.path))
    results = await asyncio.gather(*(source.load() for _, source in sources), return_exceptions=True)
    for (route, source), result in zip(sources, results, strict=True):
        if isinstance(result, BaseException):
            log.warning(
                "route %s: public keys from %s not fetched: %s", route.path, source.description, result
            )


def inherit_public_keys(old: Config, new: Config) -> None:
    """Each route of ``new`` starts from the public keys its namesake in ``old`` fetched (same place)."""
    previous = {(route.listener, route.path): route.options.key_sources() for route in old.routes}
    for route in new.routes:
        before_sources = previous.get((route.listener, route.path), ())
        for source, before in zip(route.options.key_sources(), before_sources, strict=False):
            source.inherit(before)


def _fetch_counter(metrics: Metrics, route: str) -> Callable[[bool], None]:
    """Counts a route's key fetches by outcome in ``mtls_receiver_public_key_fetches``."""
    ok, failed = metrics.key_fetches.labels(route, "ok"), metrics.key_fetches.labels(route, "failed")

    def count(succeeded: bool) -> None:
        (ok if succeeded else failed).inc()

    return count


async def _bounded(step: Awaitable[None], seconds: float, what: str) -> None:
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        log.warning("stop: %s took more than %gs; going on", what, seconds)


@contextlib.contextmanager
def bind_errors(config: Config, key: str, address: str) -> Iterator[None]:
    """A port already in use (or not ours to bind) is a config problem the user can act on."""
    try:
        yield
    except OSError as exc:
        problem = f"cannot listen on {address}: {exc.strerror or exc}"
        raise ConfigError(str(config.source), key, problem) from None


def match_sockets(config: Config, inherited: dict[str, socket.socket]) -> dict[str, socket.socket]:
    """Socket-activation sockets by listener name; a single unnamed one serves a single listener."""
    names = {listener.name for listener in config.listeners}
    matched = {name: sock for name, sock in inherited.items() if name in names}
    if not matched and len(inherited) == 1 and len(names) == 1:
        matched = {next(iter(names)): next(iter(inherited.values()))}
    for name in set(inherited) - set(matched):
        if inherited[name] not in matched.values():
            log.warning(
                "socket %r passed by systemd matches no listener"
                " (FileDescriptorName= must be a listener name)",
                name,
            )
    return matched


def check_reloadable(old: Config, new: Config) -> None:
    """Listeners' addresses and the set of routes are bound at start; everything else reloads."""
    if [(lst.name, lst.host, lst.port, lst.proxy_protocol) for lst in old.listeners] != [
        (lst.name, lst.host, lst.port, lst.proxy_protocol) for lst in new.listeners
    ]:
        raise ReceiverError(
            f"{new.source}: listeners' names, addresses or proxy_protocol changed: restart to apply"
        )
    if old.workers != new.workers:
        raise ReceiverError(
            f"{new.source}: workers changed ({old.workers} -> {new.workers}): restart to apply"
        )
    if sorted((r.listener, r.path, r.provider) for r in old.routes) != sorted(
        (r.listener, r.path, r.provider) for r in new.routes
    ):
        raise ReceiverError(f"{new.source}: routes were added, removed or changed provider: restart to apply")


def expiry_warnings(config: Config, days: int = EXPIRY_WARNING_DAYS) -> list[str]:
    """A warning for every server certificate expiring within ``days`` (or expired)."""
    warnings = []
    now = datetime.now(UTC)
    for listener in config.listeners:
        leaf = read_certificates(listener.cert)[0]
        left = (leaf.not_after - now).total_seconds() / 86400
        if left < days:
            state = "EXPIRED" if left < 0 else f"expires in {int(left)} days"
            warnings.append(
                f"server certificate of listener {listener.name!r} ({listener.cert}) {state}"
                f" on {leaf.not_after:%Y-%m-%d}"
            )
    return warnings


async def serve_forever(config: Config, announce: Callable[[Receiver], None] | None = None) -> None:
    """One process serving everything (``workers = 1``)."""
    receiver = Receiver(config)

    async def start() -> None:
        await receiver.start(listen_sockets())
        if announce is not None:
            announce(receiver)

    await serve_until_stopped(receiver, start, receiver.stop, Notifier())


async def serve_until_stopped(
    receiver: Receiver,
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    notifier: Notifier,
    on_reload: Callable[[], None] | None = None,
    also_stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or ``also_stop``); SIGHUP reloads. systemd hears of each step if it
    asks to."""
    stopping = also_stop or asyncio.Event()
    reloads: asyncio.Queue[None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before starting: a signal during start is not fatal
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, None)
    await start()
    notifier.send("READY=1", f"STATUS={receiver.summary()}")
    notifier.start_watchdog()
    reloader = asyncio.create_task(_reload_on_signal(receiver, reloads, notifier, on_reload))
    try:
        await stopping.wait()
    finally:
        notifier.send("STOPPING=1", "STATUS=stopping: finishing requests in flight")
        log.info("stopping: finishing requests in flight (up to %gs)", SHUTDOWN_GRACE)
        reloader.cancel()
        await stop()
        notifier.close()
        log.info("stopped")


async def _reload_on_signal(
    receiver: Receiver,
    reloads: asyncio.Queue[None],
    notifier: Notifier,
    on_reload: Callable[[], None] | None,
) -> None:
    while True:
        await reloads.get()
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading")
        ok = await receiver.reload()
        if ok and on_reload is not None:
            on_reload()
        status = receiver.summary() if ok else "reload rejected (see log); serving the previous configuration"
        notifier.send("READY=1", f"STATUS={status}")
