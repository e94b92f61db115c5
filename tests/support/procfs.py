"""What the kernel shows of a process under /proc: whether it lives, its children, its sockets."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["accept_queue", "alive", "connections", "descendants", "listening_ports", "unread"]

LISTEN, ESTABLISHED, CLOSE_WAIT = "0A", "01", "08"  # TCP states as /proc/net/tcp writes them


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie may linger if init does not reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """``pid`` and its children, their children and so on."""
    found, frontier = [pid], [pid]
    while frontier:
        for children in Path(f"/proc/{frontier.pop()}/task").glob("*/children"):
            kids = [int(child) for child in children.read_text().split()]
            found += kids
            frontier += kids
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _tcp_sockets(pid: int) -> Iterable[tuple[int, str, int]]:
    """(local port, state, receive queue) of each TCP socket the process has open."""
    inodes = _socket_inodes(pid)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                yield int(fields[1].rsplit(":", 1)[1], 16), fields[3], int(fields[4].split(":")[1], 16)


def listening_ports(pid: int) -> set[int]:
    """TCP ports a process has listening sockets on."""
    return {port for port, state, _ in _tcp_sockets(pid) if state == LISTEN}


def accept_queue(pid: int, port: int) -> int:
    """Connections the kernel completed on the process's listening ``port`` that it has not accepted
    yet (for a listening socket, /proc shows the accept queue's length as its receive queue)."""
    return sum(queued for local, state, queued in _tcp_sockets(pid) if local == port and state == LISTEN)


def connections(pid: int, port: int, states: tuple[str, ...] = (ESTABLISHED,)) -> int:
    """Connections to local ``port`` that process ``pid`` holds (has accepted and not yet closed).

    Established ones by default; with ``CLOSE_WAIT`` too, also those the client closed already."""
    return sum(1 for local, state, _ in _tcp_sockets(pid) if local == port and state in states)


def unread(pid: int, port: int) -> int:
    """Bytes that clients sent on the process's established connections to local ``port`` and that it
    has not read yet (their receive queues)."""
    return sum(queued for local, state, queued in _tcp_sockets(pid) if local == port and state == ESTABLISHED)
