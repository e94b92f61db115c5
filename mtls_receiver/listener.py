"""A TLS listening socket and its connections, driven straight off the event loop.

Each connection is a non-blocking :class:`ssl.SSLSocket` watched with
``loop.add_reader``: one ``recv`` both reads the socket and decrypts, so a
request costs a few C calls rather than asyncio's transport and protocol layers.
Driving it ourselves also lets us read a PROXY protocol header *before* TLS,
bound every phase (handshake, head, body, keep-alive), log every refused
handshake with its reason, and let OpenSSL send its alert on a refused handshake
(asyncio's own TLS transport drops it: CPython issue 98078).

HTTP itself is :mod:`.http11` (pure); what a request means is the server's
``handler``, awaited once per request.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .addresses import canonical_ip, in_networks
from .admission import ConnectionCounts
from .config import ListenerConfig
from .errors import Refusal
from .http11 import CONTINUE, Parsed, RequestHead, RequestParser, Response
from .logs import log_fields
from .proxy_protocol import ProxyProtocolError, read_header
from .tls import ClientTrust

__all__ = ["Request", "TLSListener", "bind"]

log = logging.getLogger("mtls_receiver")

RECV_SIZE = 65536  # more than one TLS record (16 KiB), so one recv takes a whole record
LINGER = 2.0  # seconds a closing connection keeps draining what the client still sends
ACCEPTS_PER_WAKEUP = 64


@dataclass(frozen=True, slots=True)
class Request:
    """One request and what the connection knows of its sender.

    ``refusal`` is set when the connection itself refused it (malformed head, body too
    large or too slow); ``head`` is None when not even the request line could be read.
    """

    head: RequestHead | None
    body: bytes
    peer: str  # the TCP peer, or the client a trusted PROXY header named
    client_der: bytes | None  # the verified client certificate, DER
    context: ssl.SSLContext | None  # the context the connection was handshaken with
    refusal: Refusal | None = None


Handler = Callable[[Request], Awaitable[Response]]

# connection phases; each has its own deadline (TLSListener.timeouts, in this order)
_HANDSHAKE, _IDLE, _HEAD, _BODY, _HANDLING, _CLOSING = range(6)


def bind(config: ListenerConfig, port: int | None = None, reuse_port: bool = False) -> socket.socket:
    """The listening socket of a listener; workers each get one on the same port (``reuse_port``)."""
    host = config.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    dualstack = host == "::" and socket.has_dualstack_ipv6()  # "[::]:443" also takes IPv4, as ::ffff:a.b.c.d
    return socket.create_server(
        (host, config.port if port is None else port),
        family=family,
        backlog=1024,
        dualstack_ipv6=dualstack,
        reuse_port=reuse_port,
    )


class TLSListener:
    def __init__(
        self,
        config: ListenerConfig,
        context: ssl.SSLContext,
        handler: Handler,
        inherited: socket.socket | None = None,
        on_refused: Callable[[str], None] = lambda reason: None,
        counts: ConnectionCounts | None = None,
        on_late: Callable[[Request], Response] = lambda request: Response.text(503, "not handled in time"),
        handling_grace: float = 0.0,
    ) -> None:
        self.handling_grace = handling_grace  # added to limits.handling_timeout (a route's own wait)
        self.config = config
        self.context = context  # replaced on reload: each handshake uses the current one
        self.trust = ClientTrust(config)
        self.handler = handler
        self.stopping = False  # set by stop(): answers close their connection
        self._inherited = inherited
        self._on_refused = on_refused
        self.on_late = on_late  # the answer to a request whose handling outlived its deadline
        self._socket: socket.socket | None = None
        self._connections: set[_Connection] = set()
        self._counts = counts or ConnectionCounts.private()  # shared by the workers serving this listener
        self._proxied: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self._socket = self._inherited or bind(self.config)
        self._socket.setblocking(False)
        asyncio.get_running_loop().add_reader(self._socket.fileno(), self._accept)
        self._sweep()

    @property
    def config(self) -> ListenerConfig:
        return self._config

    @config.setter
    def config(self, config: ListenerConfig) -> None:
        limits = config.limits
        self._config = config
        #: seconds each connection phase may last, indexed by phase
        self.timeouts = (
            limits.handshake_timeout,
            limits.keepalive_timeout,
            limits.header_timeout,
            limits.body_timeout,
            limits.handling_timeout + self.handling_grace,
            LINGER,
        )
        shortest = min(self.timeouts)
        self._sweep_every = max(
            0.02, min(0.25, shortest / 4)
        )  # deadlines are met within a quarter of themselves

    @property
    def handling_timeout(self) -> float:
        """Seconds a request may be handled before it is answered 503 (routes' own waits included)."""
        return self.timeouts[_HANDLING]

    def swap(self, config: ListenerConfig, context: ssl.SSLContext, handling_grace: float = 0.0) -> None:
        """New TLS material for new handshakes; the socket and open connections stay as they are."""
        self.handling_grace = handling_grace
        self.config, self.context, self.trust = config, context, ClientTrust(config)

    def still_trusted(self, context: ssl.SSLContext | None, der: bytes) -> bool:
        """A connection handshaken before a reload is checked against the trust in force now."""
        if context is None or context is self.context:
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

    async def stop(self) -> None:
        """Stop accepting; drop handshakes and idle connections. Requests in progress finish."""
        self.stopping = True
        if self._socket is not None:
            asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None
        for task in list(self._proxied):
            task.cancel()
        await asyncio.gather(*self._proxied, return_exceptions=True)
        for connection in list(self._connections):
            if connection.phase in (_HANDSHAKE, _IDLE):
                connection.close()

    @property
    def busy(self) -> int:
        """Connections with a request partly received or being handled: a graceful stop waits for them."""
        return sum(1 for connection in self._connections if connection.phase in (_HEAD, _BODY, _HANDLING))

    def close_all(self) -> None:
        """The end of a stop: whatever is still open is closed."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._connections):
            connection.close()

    # --- accepting ------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._socket is not None
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, address = self._socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: keep serving the connections we have, retry shortly
                log_fields(
                    log, logging.ERROR, "accept failed", {"listener": self.config.name, "reason": str(exc)}
                )
                self._pause_accepting()
                return
            self._admit(conn, canonical_ip(str(address[0])))

    def _pause_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._socket is not None
        fd = self._socket.fileno()
        loop.remove_reader(fd)
        loop.call_later(0.1, lambda: self._socket is not None and loop.add_reader(fd, self._accept))

    def _admit(self, conn: socket.socket, peer: str) -> None:
        refusal = self._over_limit(peer, *self._counts.add(peer))
        if refusal:  # early, before any TLS work: the connections already open keep being served
            self._counts.remove(peer)
            conn.close()
            self._refused(peer, "connection limit", refusal)
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.config.proxy_protocol:
            _Connection(self, conn, peer, peer).start()
            return
        task = asyncio.get_running_loop().create_task(self._after_proxy_header(conn, peer))
        self._proxied.add(task)
        task.add_done_callback(self._proxied.discard)

    def _over_limit(self, peer: str, from_peer: int, total: int) -> str | None:
        """Why a connection must be refused: ``from_peer`` and ``total`` count it, over all workers."""
        limits = self.config.limits
        if from_peer > limits.max_connections_per_ip and not in_networks(peer, self.config.trusted_proxies):
            return (
                f"{from_peer - 1} connections from this address"
                f" (max_connections_per_ip = {limits.max_connections_per_ip})"
            )
        if total > limits.max_connections:
            return f"{total - 1} open connections (max_connections = {limits.max_connections})"
        return None

    def _release(self, peer: str) -> None:
        self._counts.remove(peer)

    async def _after_proxy_header(self, conn: socket.socket, peer: str) -> None:
        timeout = self.config.limits.handshake_timeout
        try:
            if not in_networks(peer, self.config.trusted_proxies):
                raise ProxyProtocolError("PROXY header from a peer that is not a trusted proxy")
            async with asyncio.timeout(timeout):
                header = await read_header(conn)
        except (OSError, ProxyProtocolError, TimeoutError, asyncio.CancelledError) as exc:
            conn.close()
            self._release(peer)
            if not isinstance(exc, asyncio.CancelledError):
                reason = f"timed out after {timeout:g}s" if isinstance(exc, TimeoutError) else str(exc)
                self._refused(
                    peer,
                    "PROXY header",
                    reason,
                    "timeout" if isinstance(exc, TimeoutError) else "proxy header",
                )
            return
        source = canonical_ip(header.source) if header.source else peer
        _Connection(self, conn, peer, source).start()

    def _refused(self, peer: str, step: str, reason: str, label: str | None = None) -> None:
        log_fields(
            log,
            logging.WARNING,
            "refused",
            {"listener": self.config.name, "step": step, "peer": peer, "reason": reason},
        )
        self._on_refused(label or reason)

    # --- deadlines ------------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Every connection has one deadline for its current phase; one timer checks them all."""
        now = time.monotonic()
        for connection in list(self._connections):
            if connection.deadline <= now:
                connection.expired()
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)


class _Connection:
    """One client: TLS handshake, then requests one at a time, each answered before the next is read."""

    __slots__ = (
        "listener",
        "loop",
        "sock",
        "fd",
        "peer",
        "source",
        "tls",
        "phase",
        "deadline",
        "buffer",
        "parser",
        "continued",
        "client_der",
        "context",
        "pending",
        "reading",
        "writing",
        "eof",
        "late",
        "answering",
    )

    # the socket is ``sock`` throughout; ``tls`` is the same object while TLS is in use, None once closing

    def __init__(self, listener: TLSListener, sock: socket.socket, peer: str, source: str) -> None:
        self.listener, self.loop, self.sock, self.peer, self.source = (
            listener,
            asyncio.get_running_loop(),
            sock,
            peer,
            source,
        )
        self.fd = sock.fileno()
        self.tls: ssl.SSLSocket | None = None
        self.buffer = bytearray()  # what arrives while a request is being handled, parsed after its answer
        self.parser = RequestParser(listener.config.limits)
        self.continued = False
        self.client_der: bytes | None = None
        self.context: ssl.SSLContext | None = None
        self.pending = b""  # response bytes the socket would not take yet
        self.reading = self.writing = self.eof = False
        self.answering: asyncio.Task[None] | None = None
        self.late = False  # the request being handled outlived its deadline: its task was cancelled
        self.phase, self.deadline = _HANDSHAKE, 0.0

    def start(self) -> None:
        self.listener._connections.add(self)
        try:
            self.sock = self.tls = self.listener.context.wrap_socket(
                self.sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError) as exc:
            self.listener._refused(self.peer, "TLS handshake", str(exc))
            self.close()
            return
        self._arm(_HANDSHAKE)
        self._watch(read=True)

    # phases and their deadlines
    def _arm(self, phase: int) -> None:
        self.phase, self.deadline = phase, time.monotonic() + self.listener.timeouts[phase]

    def expired(self) -> None:
        limits = self.listener.config.limits
        if self.phase == _HANDSHAKE:
            self.listener._refused(
                self.peer, "TLS handshake", f"timed out after {limits.handshake_timeout:g}s", "timeout"
            )
        elif self.phase == _HEAD:
            self.listener._refused(
                self.peer,
                "request headers",
                f"not complete within {limits.header_timeout:g}s",
                "header timeout",
            )
        elif self.phase == _BODY:  # answered (and audited) like any refusal; the rest of the body is not read
            refusal = Refusal(408, f"body not received within {limits.body_timeout:g}s")
            self._dispatch(Parsed(self.parser.head, b"", refusal))
            return
        elif self.phase == _HANDLING:  # a handler that neither answers nor fails: cancelled, answered 503
            self.late, self.deadline = True, float("inf")
            assert self.answering is not None
            self.answering.cancel()
            return
        self.close()

    # readiness
    def _watch(self, read: bool = False, write: bool = False) -> None:
        if read != self.reading:
            (self.loop.add_reader(self.fd, self._readable) if read else self.loop.remove_reader(self.fd))
            self.reading = read
        if write != self.writing:
            (self.loop.add_writer(self.fd, self._writable) if write else self.loop.remove_writer(self.fd))
            self.writing = write

    def _readable(self) -> None:
        self._step(
            self._handshake
            if self.phase == _HANDSHAKE
            else self._drain
            if self.phase == _CLOSING
            else self._receive
        )

    def _writable(self) -> None:
        self._step(self._handshake if self.phase == _HANDSHAKE else self._flush)

    def _step(self, step: Callable[[], None]) -> None:
        """Run one readiness step; a bug is logged and drops this connection, everyone else is served."""
        try:
            step()
        except Exception:
            log_fields(
                log,
                logging.ERROR,
                "unexpected error; connection closed",
                {"listener": self.listener.config.name, "peer": self.peer},
                exc_info=True,
            )
            self.close()

    # TLS handshake
    def _handshake(self) -> None:
        assert self.tls is not None
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(read=True)
            return
        except ssl.SSLWantWriteError:
            self._watch(write=True)
            return
        except (ssl.SSLError, OSError) as exc:
            self._refuse_handshake(exc)
            return
        self.client_der = self.tls.getpeercert(binary_form=True)
        self.context = self.tls.context
        self._arm(_HEAD)
        self._watch(read=True)
        self._receive()  # the request may have come with the client's last handshake flight

    def _refuse_handshake(self, exc: BaseException) -> None:
        reason = (
            exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else str(exc) or type(exc).__name__
        )
        self.listener._refused(self.peer, "TLS handshake", reason)
        self._linger()  # OpenSSL has written its alert: let the client read it rather than a reset

    # requests
    def _receive(self) -> None:
        assert self.tls is not None
        try:
            data = self.tls.recv(RECV_SIZE)
            while self.tls.pending():
                data += self.tls.recv(RECV_SIZE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (ssl.SSLError, OSError):
            self.close()
            return
        if not data:
            if self.phase == _HANDLING:  # the client is done sending; the answer may still reach it
                self.eof = True
                self._watch()
            else:
                self.close()
            return
        if self.phase != _HANDLING:
            self._parse(data)
            return
        self.buffer += data
        if len(self.buffer) > RECV_SIZE:  # pipelining more than we hold: wait for the answer first
            self._watch()

    def _parse(self, data: bytes) -> None:
        """Feed what was read to the parser: a complete request is handed over, a partial one waits."""
        parser = self.parser
        if data:
            parser.feed(data)
        parsed = parser.next()
        if parsed is not None:
            self._dispatch(parsed)
            return
        head = parser.head
        if head is None:  # a head is arriving (or only the blank lines llhttp skips)
            if self.phase == _IDLE:
                self._arm(_HEAD)
            return
        if self.phase != _BODY:  # the head is in: the body has its own deadline, armed once
            self._arm(_BODY)
        if head.expect_continue and not self.continued:
            self.continued = True
            self._write(CONTINUE)

    def _dispatch(self, parsed: Parsed) -> None:
        """Hand a request to the handler; what arrives meanwhile is kept, and parsed once it is answered."""
        head, body, refusal = parsed
        request = Request(head, body, self.source, self.client_der, self.context, refusal)
        self.continued = self.late = False
        self._arm(_HANDLING)
        self.answering = self.loop.create_task(self._answer(request))  # held: a task nobody holds may vanish

    async def _answer(self, request: Request) -> None:
        try:
            response = await self.listener.handler(request)
        except asyncio.CancelledError:
            if not self.late:  # not our deadline (the loop is shutting down): let it end the task
                raise
            response = self.listener.on_late(request)
        except Exception:  # a bug: say so, and keep serving everyone else
            log_fields(
                log,
                logging.ERROR,
                "unexpected error while handling a request",
                {"listener": self.listener.config.name, "peer": request.peer},
                exc_info=True,
            )
            response = Response.text(500, "internal error", close=True)
        keep = (
            request.refusal is None
            and not response.close
            and request.head is not None
            and request.head.keep_alive
            and not self.listener.stopping
            and not self.eof
        )
        self._write(response.render(self.listener.timeouts[_IDLE] if keep else None))
        if self.phase == _CLOSING:  # the write failed
            return
        if keep:
            self._arm(_IDLE)
            if self.buffer or self.parser.pending:  # a pipelined request already (partly) arrived
                data = bytes(self.buffer)
                self.buffer.clear()
                self._parse(data)
            if self.phase in (_IDLE, _HEAD, _BODY) and not self.reading:
                self._watch(read=True, write=bool(self.pending))
        else:
            self._linger()

    # writing and closing
    def _write(self, data: bytes) -> None:
        assert self.tls is not None
        if self.pending:
            self.pending += data
            return
        try:
            sent = self.tls.send(data)
        except ssl.SSLWantWriteError:  # nothing was taken: the same bytes go again when writable
            sent = 0
        except (ssl.SSLError, OSError):
            self.close()
            return
        if sent < len(data):
            self.pending = data[sent:]
            self._watch(read=self.reading, write=True)

    def _flush(self) -> None:
        assert self.tls is not None
        data, self.pending = self.pending, b""
        self._watch(read=self.reading)
        self._write(data)
        if not self.pending and self.phase == _CLOSING:
            self._linger()

    def _linger(self) -> None:
        """Say goodbye (close_notify, FIN), then read and drop what the client still sends, briefly."""
        self._arm(_CLOSING)
        if self.pending:  # wait for the answer to leave first
            return
        if self.tls is not None:
            try:
                self.tls.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
            self.tls = None
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
        except OSError:
            pass
        self._watch(read=True)

    def _drain(self) -> None:
        try:
            data = socket.socket.recv(self.sock, RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()

    def close(self) -> None:
        if self.fd < 0:
            return
        self._watch()
        try:
            self.sock.close()
        except OSError:
            pass
        self.fd = -1
        self.phase = _CLOSING
        self.listener._connections.discard(self)
        self.listener._release(self.peer)
