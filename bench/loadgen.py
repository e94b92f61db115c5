"""A bounded HTTPS load generator that presents a client certificate (loopback only).

Built to cost as little client CPU per request as possible, so that on a small machine the
server, not the load generator, is what gets measured:

- ``--processes`` forked processes, each an event loop over ``--connections`` connections
  (total concurrency = processes x connections) on ``select.epoll`` with non-blocking plain
  sockets; TLS runs in memory (``ssl.SSLObject`` over two ``ssl.MemoryBIO``), so one ``recv``
  brings a whole response in and one ``send`` pushes a request (or the client's last handshake
  flight together with the request) out: about two system calls per keep-alive request, no
  asyncio, and on a kept-alive connection no per-request objects beyond the bytes themselves;
- responses are parsed minimally: status line, ``Content-Length`` (or chunked, or read to the
  end), ``Connection: close`` / HTTP/1.0;
- every process connects (keep-alive) and waits at a barrier, so start-up, imports and the
  first handshakes of kept-alive connections do not count; the clock and the CPU accounting
  (``client_cpu_s``: user+sys of the load generator's processes, from ``getrusage`` in each)
  start when the barrier releases.

Every request carries a unique Pix (``endToEndId`` from a per-run prefix), so a receiver
stores each one. ``--fresh`` opens a new TLS connection (a full handshake) per request with
``Connection: close``, how PSPs deliver; the server closes it, the client reads to the end and
closes. Otherwise connections are kept alive, and re-opened if the server closes them (a
request that found its reused connection closed before any byte of answer is retried once on
a new connection, and counted in ``retries``). Failures are counted, never raised. Output: one
JSON object with ok, non2xx, errors, first_error, seconds, rps, p50_ms, p99_ms, client_cpu_s,
retries.

``--psp`` writes like the HTTP clients PSPs send with (Java/OkHttp, Go): a fresh connection per
request whose socket keeps Nagle's algorithm on (no ``TCP_NODELAY``), the client's last handshake
flight, the request head and the body each in a ``send`` of their own (three TLS records, typically
three TCP segments), OkHttp's request headers (``Connection: Keep-Alive``), and the client, not the
server, closing once the answer is read (``close_notify``, then FIN). A small segment waits under
Nagle until the one before it is acknowledged, and a server that has nothing to answer yet may
delay that ACK: the cost that the in-memory, one-``send`` fresh mode never meets. ``--tls 1.2`` or
``--tls 1.3`` pins the protocol version (by default the highest both offer: 1.3).
"""

from __future__ import annotations

import argparse
import errno
import json
import multiprocessing
import os
import queue
import resource
import select
import socket
import ssl
import sys
import time
from ipaddress import ip_address
from threading import BrokenBarrierError

BODY = (
    '{{"pix":[{{"endToEndId":"{e2e}","txid":"bench","valor":"1.00","horario":"2026-11-23T10:00:00.000Z"}}]}}'
)

READ_SIZE = 64 * 1024  # one recv for any response here; read into one reused buffer
DRAIN_SECONDS = 2.0  # how long a closing (fresh) connection may take to see the server's close

# connection states
HANDSHAKE, RESPONSE, DRAIN = range(3)
IN, OUT = select.EPOLLIN, select.EPOLLOUT
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _request(path: str, e2e: str, keep_alive: bool, psp: bool = False) -> bytes:
    """The whole request; with ``psp``, the headers OkHttp sends (it asks to keep the connection)."""
    body = BODY.format(e2e=e2e).encode()
    if psp:
        return (
            f"POST {path} HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nHost: localhost\r\nConnection: Keep-Alive\r\n"
            "Accept-Encoding: gzip\r\nUser-Agent: okhttp/4.12.0\r\n\r\n"
        ).encode() + body
    connection = "keep-alive" if keep_alive else "close"
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n"
    ).encode() + body


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case, with the colon) in a lower-cased head, or None."""
    at = head.find(b"\r\n" + name)
    if at < 0:
        return None
    start = at + 2 + len(name)
    end = head.find(b"\r\n", start)
    return head[start:] if end < 0 else head[start:end]


def _chunked_end(buf: bytearray, at: int) -> int:
    """Where a chunked body starting at ``at`` ends (after its trailers), or -1 if incomplete."""
    while True:
        line_end = buf.find(b"\r\n", at)
        if line_end < 0:
            return -1
        size = int(bytes(buf[at:line_end]).split(b";", 1)[0], 16)
        if size == 0:  # then trailers, if any, and an empty line
            end = buf.find(b"\r\n\r\n", line_end)
            return -1 if end < 0 else end + 4
        at = line_end + 2 + size + 2
        if at > len(buf):
            return -1


class _Conn:
    __slots__ = (
        "sock",
        "fd",
        "tls",
        "incoming",
        "outgoing",
        "state",
        "events",
        "wbuf",
        "buf",
        "e2e",
        "started",
        "reused",
        "retried",
        "deadline",
        "head_end",
        "body_end",
        "until_eof",
        "keeps",
        "status",
    )

    def __init__(
        self, sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO
    ) -> None:
        self.sock, self.fd, self.tls, self.incoming, self.outgoing = (
            sock,
            sock.fileno(),
            tls,
            incoming,
            outgoing,
        )
        self.state, self.events, self.wbuf, self.buf = HANDSHAKE, 0, b"", bytearray()
        self.e2e, self.started, self.reused, self.retried, self.deadline = "", 0.0, False, False, 0.0
        self.head_end = self.body_end = -1
        self.until_eof = self.keeps = False
        self.status = 0


class _Client:
    """One process's event loop: ``connections`` concurrent clients sharing a list of ids."""

    def __init__(self, args: argparse.Namespace, context: ssl.SSLContext, ids: list[str]) -> None:
        self.context, self.ids, self.next_id = context, ids, 0
        self.psp = args.psp
        self.fresh, self.request_timeout = args.fresh or args.psp, args.request_timeout
        self.address = (args.host, args.port)
        self.family = socket.AF_INET6 if ip_address(args.host).version == 6 else socket.AF_INET
        self.path, self.keep_alive = args.path, not self.fresh
        self.templates: dict[int, tuple[bytes, bytes]] = {}  # by id length: the request around the id
        self.epoll = select.epoll()
        self.rbuf = bytearray(READ_SIZE)
        self.rview = memoryview(self.rbuf)
        self.conns: dict[int, _Conn] = {}
        self.ok = self.non2xx = self.errors = self.retries = 0
        self.first_error: str | None = None
        self.latencies: list[float] = []
        self.last_done = 0.0

    # -- requests ----------------------------------------------------------------------------

    def request_bytes(self, e2e: str) -> bytes:
        around = self.templates.get(len(e2e))
        if around is None:
            marker = b"\0" * len(e2e)
            request = _request(self.path, marker.decode(), self.keep_alive, self.psp)
            before, _, after = request.partition(marker)
            around = self.templates[len(e2e)] = (before, after)
        return around[0] + e2e.encode() + around[1]

    def take_id(self) -> str | None:
        if self.next_id >= len(self.ids):
            return None
        self.next_id += 1
        return self.ids[self.next_id - 1]

    # -- connections -------------------------------------------------------------------------

    def open(self) -> _Conn:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if not self.psp:  # PSPs' clients leave Nagle on (Java's default)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(self.address)
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, os.strerror(code))
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = self.context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        except BaseException:
            sock.close()
            raise
        conn = _Conn(sock, tls, incoming, outgoing)
        self.conns[conn.fd] = conn
        self.epoll.register(conn.fd, IN)
        conn.events = IN
        return conn

    def connect_blocking(self, timeout: float) -> _Conn | None:
        """A handshaken connection, made before the clock starts (keep-alive); None on failure."""
        try:
            conn = self.open()
        except OSError:
            return None
        deadline = time.monotonic() + timeout
        waiter = select.poll()
        try:
            while True:
                try:
                    conn.tls.do_handshake()
                    finished = True
                except ssl.SSLWantReadError:
                    finished = False
                self.flush(conn)
                if finished and not conn.wbuf:
                    conn.state = RESPONSE
                    return conn
                waiter.register(
                    conn.fd, (0 if finished else select.POLLIN) | (select.POLLOUT if conn.wbuf else 0)
                )
                events = waiter.poll(max(0.0, deadline - time.monotonic()) * 1000)
                if not events:
                    raise TimeoutError("handshake timed out")
                if not finished and events[0][1] & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    data = conn.sock.recv(READ_SIZE)
                    if not data:
                        raise ConnectionError("server closed the connection during the handshake")
                    conn.incoming.write(data)
        except (OSError, ssl.SSLError, ValueError):
            self.close(conn)
            return None

    def close(self, conn: _Conn) -> None:
        if self.conns.pop(conn.fd, None) is not None:
            try:
                self.epoll.unregister(conn.fd)
            except OSError:
                pass
        conn.sock.close()

    def want(self, conn: _Conn, events: int) -> None:
        if conn.events != events:
            self.epoll.modify(conn.fd, events)
            conn.events = events

    def flush(self, conn: _Conn) -> None:
        """Send what an earlier send left over and what TLS produced since, in one ``send``."""
        data = conn.wbuf + conn.outgoing.read() if conn.outgoing.pending else conn.wbuf
        if data:
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                sent = 0
            conn.wbuf = data[sent:] if sent < len(data) else b""
            self.want(conn, IN | OUT if conn.wbuf else IN)

    # -- the life of a request ---------------------------------------------------------------

    def start(self, conn: _Conn | None, e2e: str | None = None, started: float | None = None) -> None:
        """Send the next request (or ``e2e`` again) on ``conn``, or on a new connection if None.

        Never raises: a request that cannot even be sent is counted, and the next one tried.
        """
        while True:
            if e2e is None:
                e2e = self.take_id()
                if e2e is None:  # this client is done
                    if conn is not None:
                        self.close(conn)
                    return
            now = time.perf_counter()
            try:
                if conn is None:
                    conn = self.open()
                    conn.e2e, conn.started, conn.deadline = e2e, started or now, now + self.request_timeout
                    conn.reused, conn.retried = False, started is not None
                    self.handshake(conn)
                else:
                    conn.e2e, conn.started, conn.deadline = e2e, started or now, now + self.request_timeout
                    conn.reused, conn.retried = True, started is not None
                    self.send_request(conn)
                return
            except (OSError, ssl.SSLError, ValueError) as exc:
                if conn is None:
                    self.count_error(exc)
                    e2e = started = None
                    continue
                self.close(conn)
                if self.may_retry(conn, exc):
                    self.retries += 1
                    e2e, started = conn.e2e, conn.started
                else:
                    self.count_error(exc)
                    e2e = started = None
                conn = None

    def handshake(self, conn: _Conn) -> None:
        try:
            conn.tls.do_handshake()
        except ssl.SSLWantReadError:
            self.flush(conn)
            return
        if self.psp:  # a blocking client's handshake sends its last flight before it returns
            self.flush(conn)
        self.send_request(conn)  # otherwise the client's last handshake flight leaves with the request

    def send_request(self, conn: _Conn) -> None:
        conn.state = RESPONSE
        conn.buf.clear()
        conn.head_end = conn.body_end = -1
        conn.until_eof = False
        request = self.request_bytes(conn.e2e)
        if self.psp:  # head and body written apart, as an HTTP client writes them: two records, two sends
            split = request.index(b"\r\n\r\n") + 4
            conn.tls.write(request[:split])
            self.flush(conn)
            request = request[split:]
        conn.tls.write(request)
        self.flush(conn)

    def readable(self, conn: _Conn) -> None:
        rbuf, rview = self.rbuf, self.rview
        try:
            size = conn.sock.recv_into(rbuf)
        except BlockingIOError:
            return
        if not size:
            self.eof(conn)
            return
        conn.incoming.write(rview[:size])
        if conn.state == HANDSHAKE:
            self.handshake(conn)
            if conn.state != RESPONSE or not conn.incoming.pending:
                return
        closed = False
        tls, incoming, buf = conn.tls, conn.incoming, conn.buf
        while True:  # stop when all is read: an SSLWantReadError costs more than the rest together
            try:
                size = tls.read(READ_SIZE, rbuf)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
                break
            if not size:
                closed = True
                break
            buf += rview[:size]
            if not incoming.pending and not tls.pending():
                break
        if conn.outgoing.pending:  # e.g. a TLS 1.3 key update
            self.flush(conn)
        if conn.state == DRAIN:
            if closed:
                self.close(conn)
            else:
                buf.clear()
            return
        if buf and self.parse(conn):
            self.done(conn, closed)
        elif closed:
            self.eof(conn)

    def parse(self, conn: _Conn) -> bool:
        """Whether the buffered response is complete (reading its head on the way)."""
        buf = conn.buf
        while conn.head_end < 0:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                return False
            head = bytes(buf[:head_end]).lower()
            if not head.startswith(b"http/1."):
                raise ValueError(f"not an HTTP/1 response: {head[:40]!r}")
            status = int(head[9:12])
            if 100 <= status < 200:  # an interim response: drop it
                del buf[: head_end + 4]
                continue
            conn.status, conn.head_end = status, head_end + 4
            connection = _header(head, b"connection:")
            if head.startswith(b"http/1.0"):
                conn.keeps = connection is not None and b"keep-alive" in connection
            else:
                conn.keeps = connection is None or b"close" not in connection
            length = _header(head, b"content-length:")
            encoding = _header(head, b"transfer-encoding:")
            if encoding is not None and b"chunked" in encoding:
                conn.body_end = -2  # chunked
            elif length is not None:
                conn.body_end = conn.head_end + int(length)
            elif status in (204, 304):
                conn.body_end = conn.head_end
            else:
                conn.until_eof, conn.keeps = True, False
        if conn.until_eof:
            return False
        if conn.body_end == -2:
            end = _chunked_end(buf, conn.head_end)
            return end >= 0
        return len(buf) >= conn.body_end

    def done(self, conn: _Conn, closed: bool) -> None:
        now = time.perf_counter()
        self.latencies.append(now - conn.started)
        self.last_done = now
        if 200 <= conn.status < 300:
            self.ok += 1
        else:
            self.non2xx += 1
        if conn.keeps and not self.fresh and not closed:
            self.start(conn)
            return
        if closed:
            self.close(conn)
        elif self.psp:
            self.hang_up(conn)
        else:  # the server closes: read to its end, then close (no RST, no TIME_WAIT here)
            conn.state, conn.deadline = DRAIN, now + DRAIN_SECONDS
            conn.buf.clear()
        self.start(None)

    def hang_up(self, conn: _Conn) -> None:
        """Close as an HTTP client done with a connection does: ``close_notify``, then FIN."""
        try:
            conn.tls.unwrap()
        except ssl.SSLError:  # SSLWantReadError: the server's close_notify is not awaited
            pass
        try:
            conn.sock.send(conn.wbuf + conn.outgoing.read())
        except OSError:
            pass
        self.close(conn)

    def eof(self, conn: _Conn) -> None:
        if conn.state == DRAIN:
            self.close(conn)
        elif conn.state == RESPONSE and conn.until_eof and conn.head_end >= 0:
            self.done(conn, True)
        else:
            what = "handshake" if conn.state == HANDSHAKE else "response"
            self.lost(conn, ConnectionError(f"server closed the connection during the {what}"))

    @staticmethod
    def may_retry(conn: _Conn, exc: BaseException) -> bool:
        """Whether the request on ``conn`` found its kept-alive connection closed before any answer."""
        return (
            conn.reused
            and not conn.retried
            and conn.state == RESPONSE
            and not conn.buf
            and isinstance(exc, ConnectionError)
        )

    def lost(self, conn: _Conn, exc: BaseException) -> None:
        """``conn`` failed or closed under a request: once more on a new connection if that is
        allowed (``may_retry``), else the request counts as failed."""
        if self.may_retry(conn, exc):
            self.close(conn)
            self.retries += 1
            self.start(None, conn.e2e, conn.started)
        else:
            self.fail(conn, exc)

    def count_error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = repr(exc)

    def fail(self, conn: _Conn, exc: BaseException) -> None:
        """Count the request on ``conn`` as failed; its client goes on with a new connection."""
        self.count_error(exc)
        self.close(conn)
        self.start(None)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, deadline: float) -> None:
        poll, conns = self.epoll.poll, self.conns
        next_check = time.perf_counter() + 0.5
        while conns:
            for fd, events in poll(0.5):
                conn = conns.get(fd)
                if conn is None:
                    continue
                try:
                    if events & OUT and conn.wbuf:
                        self.flush(conn)
                    if events & (IN | select.EPOLLHUP | select.EPOLLERR):
                        self.readable(conn)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    if conns.get(fd) is not conn:  # already closed and its client handed on
                        self.first_error = self.first_error or repr(exc)
                    elif conn.state == DRAIN:
                        self.close(conn)
                    else:
                        self.lost(conn, exc)
            now = time.perf_counter()
            if now >= next_check:
                next_check = now + 0.5
                self.expire(now >= deadline)

    def expire(self, everything: bool) -> None:
        now = time.perf_counter()
        if everything:  # the run's --timeout: stop, and count what is left as errors
            left = len(self.ids) - self.next_id
            self.next_id = len(self.ids)
            if left:
                self.errors += left
                self.first_error = self.first_error or f"TimeoutError('{left} requests not sent: --timeout')"
        for conn in list(self.conns.values()):
            if everything or now >= conn.deadline:
                if conn.state == DRAIN:
                    self.close(conn)
                else:
                    self.fail(conn, TimeoutError(f"no complete response in {now - conn.started:.1f} s"))


def _ids(args: argparse.Namespace, index: int) -> list[str]:
    count = args.requests // args.processes + (index < args.requests % args.processes)
    return [f"E{args.run_id}{index:02d}{n:08d}"[:32] for n in range(count)]


def _cpu() -> float:
    """User+sys CPU seconds of this process (getrusage: finer than the clock ticks of os.times)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process(
    args: argparse.Namespace,
    index: int,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue[dict],
) -> None:
    ids = _ids(args, index)
    stats: dict = {
        "ok": 0,
        "non2xx": 0,
        "errors": 0,
        "retries": 0,
        "latencies": [],
        "start": None,
        "end": None,
        "cpu": 0.0,
    }
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        context = ssl.create_default_context(cafile=args.ca)
        context.load_cert_chain(args.cert)
        if args.tls:
            context.minimum_version = context.maximum_version = TLS_VERSIONS[args.tls]
        client = _Client(args, context, ids)
        ready: list[_Conn] = []
        if not client.fresh:
            for _ in range(min(args.connections, len(ids))):
                conn = client.connect_blocking(min(args.timeout, args.request_timeout))
                if conn is not None:
                    ready.append(conn)
    except Exception as exc:  # no client: every request of this process is an error
        barrier.abort()
        stats.update(errors=len(ids), first_error=repr(exc))
        results.put(stats)
        return
    try:
        barrier.wait(args.timeout)
    except BrokenBarrierError:
        stats.update(errors=len(ids), first_error="another load-generator process failed to start")
        results.put(stats)
        return
    cpu, start = _cpu(), time.perf_counter()
    try:
        for slot in range(min(args.connections, len(ids))):
            client.start(ready[slot] if slot < len(ready) else None)
        client.run(start + args.timeout)
    except Exception as exc:  # a bug, not a server's doing: what was not answered counts as failed
        client.errors = len(ids) - client.ok - client.non2xx
        client.first_error = client.first_error or repr(exc)
    client.last_done = client.last_done or time.perf_counter()
    stats.update(
        ok=client.ok,
        non2xx=client.non2xx,
        errors=client.errors,
        retries=client.retries,
        latencies=client.latencies,
        start=start,
        end=client.last_done,
        cpu=_cpu() - cpu,
    )
    if client.first_error is not None:
        stats["first_error"] = client.first_error
    results.put(stats)


def run(args: argparse.Namespace) -> dict:
    if not ip_address(args.host).is_loopback:
        raise SystemExit("loadgen talks to loopback addresses only")
    if args.requests < 0 or args.processes < 1 or args.connections < 1:
        raise SystemExit("--requests must be >= 0, --processes and --connections >= 1")
    forked = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[dict] = forked.Queue()
    barrier = forked.Barrier(args.processes + 1)
    workers = [
        forked.Process(target=_process, args=(args, i, barrier, results), daemon=True)
        for i in range(args.processes)
    ]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(args.timeout)  # every process connected and ready: the clock starts now
    except BrokenBarrierError:
        pass
    collected: list[dict] = []
    give_up = time.monotonic() + args.timeout + 30
    while len(collected) < args.processes:
        try:
            collected.append(results.get(timeout=1.0))
        except queue.Empty:
            if time.monotonic() > give_up or not any(worker.is_alive() for worker in workers):
                break
    if len(collected) < args.processes:  # a process died or hung: its requests count as failed
        missing = args.requests - sum(s["ok"] + s["non2xx"] + s["errors"] for s in collected)
        collected.append(
            {
                "ok": 0,
                "non2xx": 0,
                "errors": missing,
                "retries": 0,
                "latencies": [],
                "start": None,
                "end": None,
                "cpu": 0.0,
                "first_error": f"{args.processes - len(collected)} load-generator process(es) gave no result",
            }
        )
    for worker in workers:
        worker.join(5)
        if worker.is_alive():
            worker.kill()
    starts = [s["start"] for s in collected if s["start"] is not None]
    ends = [s["end"] for s in collected if s["end"] is not None]
    elapsed = max(ends) - min(starts) if starts and ends else 0.0
    latencies = sorted(lat for stats in collected for lat in stats["latencies"])
    ok = sum(s["ok"] for s in collected)

    def percentile(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return {
        "ok": ok,
        "non2xx": sum(s["non2xx"] for s in collected),
        "errors": sum(s["errors"] for s in collected),
        "first_error": next((s["first_error"] for s in collected if s.get("first_error")), None),
        "seconds": elapsed,
        "rps": ok / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "client_cpu_s": sum(s["cpu"] for s in collected),
        "retries": sum(s["retries"] for s in collected),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/webhook/pix")
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True, help="client certificate PEM with its key")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--connections", type=int, default=8, help="per process")
    p.add_argument("--fresh", action="store_true", help="a new TLS connection per request")
    p.add_argument(
        "--psp",
        action="store_true",
        help="write like the HTTP clients PSPs use: a new connection per request, Nagle "
        "on, the last handshake flight, the head and the body in separate sends, the "
        "client closes",
    )
    p.add_argument(
        "--tls", choices=sorted(TLS_VERSIONS), help="pin the TLS version (default: the highest both offer)"
    )
    p.add_argument("--run-id", default=str(int(time.time()) % 10_000_000))
    p.add_argument("--timeout", type=float, default=600, help="for the whole run, seconds")
    p.add_argument("--request-timeout", type=float, default=60, help="for one request, seconds")
    return p


if __name__ == "__main__":
    print(json.dumps(run(parser().parse_args(sys.argv[1:]))))
