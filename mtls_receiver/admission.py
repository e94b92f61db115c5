"""Open connections per client address and per listener, counted over every worker process.

``max_connections_per_ip`` and ``max_connections`` are promises about a listener, and with
``workers = N`` a listener is N processes, each accepting on its own SO_REUSEPORT socket. So the
counts live in one shared memory region (a memfd the supervisor creates and hands to every
worker) holding a row of counters per (listener, worker):

* slot 0 of a row: the worker's open connections on that listener;
* slots 1..BUCKETS: its open connections per address bucket, the bucket being a keyed hash
  (BLAKE2b, a random key the supervisor writes into the region) of the address.

A worker writes only its own rows, so there is no cross-process read-modify-write; admission
adds the new connection to its own row first and then sums the address's bucket (and the
totals) over every worker's row, taking the connection back if a limit is exceeded. Two workers
admitting from one address at the same instant can each miss the other's increment (their
stores may still sit in a CPU's store buffer), so a limit may be passed by at most one
connection per other worker, for that instant only. Addresses that share a bucket are counted
together: that can only make the limit stricter, and the key is secret so an attacker cannot aim
for a victim's bucket. A worker that exits has its rows zeroed by the supervisor before its
replacement starts (its connections died with it).

With one process the same code runs on private memory.
"""

from __future__ import annotations

import hashlib
import mmap
import os

__all__ = ["BUCKETS", "ConnectionCounts", "ConnectionTable"]

BUCKETS = 65536  # per listener and worker: with 2,000 addresses connected, ~3 % share a bucket with another
_KEY_SIZE = 16
_SLOT = 4  # bytes per counter (unsigned 32-bit, native order: every process is on this machine)
_ROW = BUCKETS + 1  # counters per row: the total, then the buckets


class ConnectionTable:
    """The whole region: every listener's rows for every worker, and the hash key."""

    def __init__(self, memory: mmap.mmap, listeners: int, workers: int, fd: int | None = None) -> None:
        self.memory, self.listeners, self.workers, self.fd = memory, listeners, workers, fd
        self.key = bytes(memory[:_KEY_SIZE])
        self.slots = memoryview(memory).cast("I")  # slot k is at byte _KEY_SIZE + 4k once past the key
        self._first = _KEY_SIZE // _SLOT

    @staticmethod
    def size(listeners: int, workers: int) -> int:
        return _KEY_SIZE + listeners * workers * _ROW * _SLOT

    @classmethod
    def create(cls, listeners: int, workers: int, shared: bool = True) -> ConnectionTable:
        """A new zeroed table with a fresh random key: in a memfd workers inherit, or private memory."""
        size = cls.size(listeners, workers)
        if not shared:
            memory = mmap.mmap(-1, size)
            memory[:_KEY_SIZE] = os.urandom(_KEY_SIZE)
            return cls(memory, listeners, workers)
        fd = os.memfd_create("mtls-receiver-connections", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        memory = mmap.mmap(fd, size)
        memory[:_KEY_SIZE] = os.urandom(_KEY_SIZE)
        return cls(memory, listeners, workers, fd)

    @classmethod
    def attach(cls, fd: int, listeners: int, workers: int) -> ConnectionTable:
        """A worker's view of the supervisor's table (the descriptor is closed: the mapping keeps it)."""
        try:
            memory = mmap.mmap(fd, cls.size(listeners, workers))
        finally:
            os.close(fd)
        return cls(memory, listeners, workers)

    def row(self, listener: int, worker: int) -> int:
        """The slot index where a (listener, worker) row starts."""
        return self._first + (listener * self.workers + worker) * _ROW

    def counts(self, listener: int, worker: int) -> ConnectionCounts:
        """What one worker's TLS listener uses to admit and release connections."""
        return ConnectionCounts(self, listener, worker)

    def clear_worker(self, worker: int) -> None:
        """Zero a worker's rows: done by the supervisor once it exited, before its replacement starts."""
        for listener in range(self.listeners):
            start = self.row(listener, worker) * _SLOT
            self.memory[start : start + _ROW * _SLOT] = bytes(_ROW * _SLOT)

    def close(self) -> None:
        self.slots.release()
        self.memory.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ConnectionCounts:
    """One listener in one process: add a connection, release it, and see the listener-wide counts."""

    __slots__ = ("table", "slots", "own", "rows")

    def __init__(self, table: ConnectionTable, listener: int, worker: int) -> None:
        self.table, self.slots = table, table.slots
        self.own = table.row(listener, worker)
        self.rows = [table.row(listener, other) for other in range(table.workers)]

    @classmethod
    def private(cls) -> ConnectionCounts:
        """Counts for a listener served by one process only (``workers = 1``, tests)."""
        return ConnectionTable.create(1, 1, shared=False).counts(0, 0)

    def bucket(self, address: str) -> int:
        digest = hashlib.blake2b(address.encode(), digest_size=8, key=self.table.key).digest()
        return 1 + int.from_bytes(digest, "little") % BUCKETS

    def add(self, address: str) -> tuple[int, int]:
        """Count a new connection from ``address``; then (connections from it, all connections) on
        the listener over every worker, this one included."""
        bucket, slots, own = self.bucket(address), self.slots, self.own
        slots[own] += 1
        slots[own + bucket] += 1
        return sum(slots[row + bucket] for row in self.rows), sum(slots[row] for row in self.rows)

    def remove(self, address: str) -> None:
        """A connection from ``address`` counted by ``add`` has closed (or was refused)."""
        bucket, slots, own = self.bucket(address), self.slots, self.own
        if slots[own + bucket] and slots[own]:  # never below zero, whatever happens
            slots[own + bucket] -= 1
            slots[own] -= 1
