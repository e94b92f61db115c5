"""Connection limits hold for the listener, however many workers serve it (``workers = 2``).

Real subprocesses on one SO_REUSEPORT port, real TLS handshakes from 127.0.0.1 and 127.0.0.2
(both loopback on Linux). Connections are opened one after another, each handshake finished
(admitted) or refused before the next, so the counts are exact. Where each connection landed is
read from /proc: the test checks the connections it counts really are spread over both workers.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
from collections.abc import Iterator

import pytest
from support import WAIT, Pki, Serve, client_context, connections, wait_until

from mtls_receiver.admission import BUCKETS, ConnectionCounts, ConnectionTable


def limits(**values: int) -> str:
    return "limits = { " + ", ".join(f"{key} = {value}" for key, value in values.items()) + " }\n"


def tls_connect(port: int, context: ssl.SSLContext, source: str = "127.0.0.1") -> ssl.SSLSocket | None:
    """A finished mTLS handshake from ``source``, or None if the receiver refused the connection."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0))
    try:
        return context.wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, OSError):  # closed right after accept: EOF or reset during the handshake
        raw.close()
        return None


class Clients:
    """The test's open connections, closed at the end whatever happens."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port, self.context = port, context
        self.open: list[ssl.SSLSocket] = []

    def connect(self, count: int, source: str = "127.0.0.1") -> int:
        """Try ``count`` connections one after another; how many were admitted."""
        admitted = 0
        for _ in range(count):
            tls = tls_connect(self.port, self.context, source)
            if tls is not None:
                self.open.append(tls)
                admitted += 1
        return admitted

    def close(self, count: int) -> None:
        for tls in self.open[:count]:
            tls.close()
        del self.open[:count]


@pytest.fixture
def clients() -> Iterator[list[Clients]]:
    made: list[Clients] = []
    yield made
    for group in made:
        group.close(len(group.open))


def test_per_address_limit_holds_across_two_workers(serve: Serve, pki: Pki, clients: list[Clients]) -> None:
    server, port = serve(workers=2, listener_extra=limits(max_connections_per_ip=16))
    workers = server.workers()
    mine = Clients(port, client_context(pki, pki.client))
    clients.append(mine)

    assert mine.connect(24) == 16  # the listener's limit, not 16 per worker (32 before)
    held = [connections(pid, port) for pid in workers]
    assert sum(held) == 16 and all(held), f"admitted connections per worker: {held}"
    server.wait_for_count("(max_connections_per_ip = 16)", 8)
    assert server.count("16 connections from this address") == 8

    # another address is not affected, on either worker
    other = Clients(port, client_context(pki, pki.client))
    clients.append(other)
    assert other.connect(6, source="127.0.0.2") == 6

    # closing some frees their slots, for whichever worker takes the next connections
    mine.close(5)
    wait_until(
        lambda: sum(connections(pid, port) for pid in workers) == 17,
        WAIT,
        lambda: f"the workers still hold {[connections(pid, port) for pid in workers]}",
    )
    assert mine.connect(8) == 5
    assert server.workers() == workers


def test_total_limit_holds_across_two_workers(serve: Serve, pki: Pki, clients: list[Clients]) -> None:
    server, port = serve(workers=2, listener_extra=limits(max_connections=12))
    workers = server.workers()
    group = Clients(port, client_context(pki, pki.client))
    clients.append(group)

    assert group.connect(10) + group.connect(10, source="127.0.0.2") == 12
    held = [connections(pid, port) for pid in workers]
    assert sum(held) == 12 and all(held), f"admitted connections per worker: {held}"
    server.wait_for_count("(max_connections = 12)", 8)
    assert server.count("12 open connections") == 8


def test_a_replaced_workers_connections_are_forgotten(serve: Serve, pki: Pki, clients: list[Clients]) -> None:
    """A worker killed with connections open: its count goes with it, the replacement starts at zero."""
    server, port = serve(workers=2, listener_extra=limits(max_connections_per_ip=16))
    group = Clients(port, client_context(pki, pki.client))
    clients.append(group)
    assert group.connect(24) == 16
    victim = server.workers()[0]
    lost = connections(victim, port)
    assert lost > 0

    os.kill(victim, signal.SIGKILL)
    server.wait_for_output(f"(pid {victim}) exited with signal 9; starting another", WAIT)
    wait_until(
        lambda: len(server.workers()) == 2 and victim not in server.workers(),
        WAIT,
        lambda: "no replacement:\n" + "".join(server.output),
    )

    assert group.connect(lost + 4) == lost  # the dead worker's share is free again, no more


# --- the table itself --------------------------------------------------------------------------------


def test_each_worker_writes_its_row_and_sees_the_sum() -> None:
    table = ConnectionTable.create(listeners=2, workers=3)
    try:
        assert table.fd is not None
        other_process = ConnectionTable.attach(os.dup(table.fd), listeners=2, workers=3)  # as a worker does
        first, second = table.counts(1, 0), other_process.counts(1, 2)
        assert first.add("203.0.113.7") == (1, 1)
        assert second.add("203.0.113.7") == (2, 2)
        shared = first.bucket("198.51.100.1") == first.bucket("203.0.113.7")  # 1 in 65536
        assert second.add("198.51.100.1") == ((3, 3) if shared else (1, 3))
        assert other_process.counts(0, 2).add("203.0.113.7") == (1, 1)  # another listener counts apart
        table.clear_worker(2)  # worker 2 exited: what it counted is gone
        assert first.add("203.0.113.7") == (2, 2)
        first.remove("203.0.113.7")
        first.remove("203.0.113.7")
        first.remove("203.0.113.7")  # one too many is ignored: never below zero
        assert first.add("203.0.113.7") == (1, 1)
        other_process.close()
    finally:
        table.close()


def test_the_bucket_depends_on_a_secret_key() -> None:
    """An attacker who knows the addresses cannot know which share a bucket: the key is random."""
    addresses = [f"10.0.{i // 256}.{i % 256}" for i in range(64)]
    one, two = ConnectionCounts.private(), ConnectionCounts.private()
    assert [one.bucket(a) for a in addresses] != [two.bucket(a) for a in addresses]
    assert all(1 <= one.bucket(a) <= BUCKETS for a in addresses)
