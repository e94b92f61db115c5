"""A TLS listening socket whose handshakes we drive ourselves.

aiohttp's sites hand the socket to ``loop.create_server``, which hides the
handshake. Accepting here lets us read a PROXY protocol header *before* TLS,
bound the handshake time, log every refused handshake with its reason, and
remember the real client address for the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import weakref
from asyncio import sslproto
from collections.abc import Callable

from .addresses import canonical_ip, in_networks
from .config import ListenerConfig
from .proxy_protocol import ProxyProtocolError, read_header
from .tls import ClientTrust

__all__ = ["TLSListener"]

log = logging.getLogger("mtls_receiver")


class _AlertingSSLProtocol(sslproto.SSLProtocol):
    """asyncio's server-side TLS, except that a refused handshake still sends OpenSSL's alert.

    CPython's asyncio (issue 98078) closes the connection without writing the alert
    OpenSSL produced, so a client without a certificate sees "connection reset" instead
    of "certificate required". Flushing the outgoing buffer first fixes that.
    """

    # asyncio allocates (and zeroes) a 256 KiB read buffer per connection; a TLS record is at
    # most 16 KiB, so 32 KiB serves as well and 1,000 idle connections cost ~200 MiB less.
    max_size = 32 * 1024

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(Exception):
                self._process_outgoing()
        super()._on_handshake_complete(handshake_exc)


class TLSListener:
    def __init__(
        self,
        config: ListenerConfig,
        context: ssl.SSLContext,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        inherited: socket.socket | None = None,
        on_refused: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.config = config
        self.context = context  # replaced on reload: each handshake uses the current one
        self.trust = ClientTrust(config)
        self._factory = protocol_factory
        self._inherited = inherited
        self._on_refused = on_refused
        self._socket: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._sources: weakref.WeakKeyDictionary[asyncio.BaseTransport, str] = weakref.WeakKeyDictionary()
        self._started: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._open: dict[str, list[asyncio.Task[None] | asyncio.BaseTransport]] = {}

    async def start(self) -> None:
        self._socket = self._inherited or self._bind()
        self._socket.setblocking(False)
        self._accepting = asyncio.create_task(self._accept_loop(self._socket), name=f"accept-{self.config.name}")

    def _bind(self) -> socket.socket:
        host = self.config.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        dualstack = host == "::" and socket.has_dualstack_ipv6()  # "[::]:443" also takes IPv4, as ::ffff:a.b.c.d
        return socket.create_server((host, self.config.port), family=family, backlog=1024, dualstack_ipv6=dualstack)

    def swap(self, config: ListenerConfig, context: ssl.SSLContext) -> None:
        """New TLS material for new handshakes; the socket and open connections stay as they are."""
        self.config, self.context, self.trust = config, context, ClientTrust(config)

    def still_trusted(self, ssl_object: ssl.SSLObject | None, der: bytes) -> bool:
        """A connection handshaken before a reload is checked against the trust in force now."""
        if ssl_object is None or ssl_object.context is self.context:
            return True
        return self.trust.trusts(der)

    @property
    def port(self) -> int:
        assert self._socket is not None, "listener not started"
        return int(self._socket.getsockname()[1])

    @property
    def shown_address(self) -> str:
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def source_address(self, transport: asyncio.BaseTransport) -> str | None:
        """The client address a PROXY header gave for this connection, if any."""
        return self._sources.get(transport)

    def request_started(self, transport: asyncio.BaseTransport) -> None:
        """A request's headers arrived on this connection: the header deadline no longer applies."""
        self._started.add(transport)

    async def stop(self) -> None:
        """Stop accepting and abandon handshakes in progress; established connections are aiohttp's."""
        if self._accepting is not None:
            self._accepting.cancel()
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*self._handshakes, *(t for t in [self._accepting] if t), return_exceptions=True)
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def _accept_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(listening)
            except OSError as exc:  # e.g. EMFILE: keep serving the connections we have
                log.error("listener=%s accept failed: %s", self.config.name, exc)
                await asyncio.sleep(0.1)
                continue
            peer = canonical_ip(str(address[0]))
            refusal = self._over_limit(peer)
            if refusal:  # early, before any TLS work: the connections already open keep being served
                conn.close()
                self._refused(peer, "connection limit", refusal)
                continue
            task = asyncio.create_task(self._handshake(conn, peer))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)
            self._open.setdefault(peer, []).append(task)

    def _over_limit(self, peer: str) -> str | None:
        limits = self.config.limits
        live = self._live(peer)
        if len(live) >= limits.max_connections_per_ip and not in_networks(peer, self.config.trusted_proxies):
            return f"{len(live)} connections from this address (max_connections_per_ip = {limits.max_connections_per_ip})"
        total = sum(len(self._live(ip)) for ip in list(self._open))
        if total >= limits.max_connections:
            return f"{total} open connections (max_connections = {limits.max_connections})"
        return None

    def _live(self, peer: str) -> list[asyncio.Task[None] | asyncio.BaseTransport]:
        """This address's connections still open (handshakes in progress count)."""
        live = [h for h in self._open.get(peer, ()) if not (h.done() if isinstance(h, asyncio.Task) else h.is_closing())]
        if live:
            self._open[peer] = live
        else:
            self._open.pop(peer, None)
        return live

    def _refused(self, peer: str, step: str, reason: str, label: str | None = None) -> None:
        log.warning("refused listener=%s %s peer=%s reason=%r", self.config.name, step, peer, reason)
        self._on_refused(label or reason)

    async def _handshake(self, conn: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.config.limits.handshake_timeout
        step, raw = "PROXY header", None
        try:
            async with asyncio.timeout(timeout):
                source = await self._proxy_source(conn, peer) if self.config.proxy_protocol else None
                step = "TLS handshake"
                waiter = loop.create_future()
                app = self._factory()
                tls = _AlertingSSLProtocol(loop, app, self.context, waiter, server_side=True,
                                           ssl_handshake_timeout=timeout)
                raw, _ = await loop.connect_accepted_socket(lambda: tls, conn)
                await waiter
        except (OSError, ProxyProtocolError, TimeoutError) as exc:
            if raw is not None:
                raw.abort()
            conn.close()
            reason = f"timed out after {timeout:g}s" if isinstance(exc, TimeoutError) else _reason(exc)
            label = "timeout" if isinstance(exc, TimeoutError) else reason if step == "TLS handshake" else "proxy header"
            self._refused(peer, step, reason, label)
            return
        transport = app.transport  # type: ignore[attr-defined]
        self._open.setdefault(peer, []).append(raw)
        if source is not None:
            self._sources[transport] = source
        loop.call_later(self.config.limits.header_timeout, self._expire_if_idle, transport, peer)

    def _expire_if_idle(self, transport: asyncio.BaseTransport, peer: str) -> None:
        """Slowloris: a connection that has not sent a complete request head in time is closed."""
        if transport not in self._started and not transport.is_closing():
            transport.abort()
            self._refused(peer, "request headers", f"not complete within {self.config.limits.header_timeout:g}s",
                          "header timeout")

    async def _proxy_source(self, conn: socket.socket, peer: str) -> str | None:
        if not in_networks(peer, self.config.trusted_proxies):
            raise ProxyProtocolError("PROXY header from a peer that is not a trusted proxy")
        header = await read_header(conn)
        return canonical_ip(header.source) if header.source else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason
    return str(exc) or type(exc).__name__
