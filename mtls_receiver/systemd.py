"""The two systemd protocols a service needs, without libsystemd: sd_notify and socket activation."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

__all__ = ["Notifier", "listen_sockets"]

log = logging.getLogger("mtls_receiver")

SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends ``READY=1``, ``STATUS=…``, ``WATCHDOG=1``… to ``$NOTIFY_SOCKET``; a no-op without it."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *fields: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:  # systemd gone or socket full: never fatal
            log.debug("sd_notify failed: %s", exc)

    def start_watchdog(self, healthy: Callable[[], bool] = lambda: True) -> None:
        """``WATCHDOG=1`` every half ``WATCHDOG_USEC``, while ``healthy()`` holds."""
        if self.watchdog_interval is not None and self._socket is not None:
            self._watchdog = asyncio.create_task(
                self._keepalive(self.watchdog_interval, healthy), name="watchdog"
            )

    async def _keepalive(self, interval: float, healthy: Callable[[], bool]) -> None:
        while True:
            if healthy():
                self.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def listen_sockets(environ: dict[str, str] | None = None) -> dict[str, socket.socket]:
    """Sockets passed by systemd socket activation, by name (``LISTEN_FDNAMES``; else ``fd3``, ``fd4``…).

    Only for this process: a ``LISTEN_PID`` naming another process is ignored.
    """
    env = os.environ if environ is None else environ
    count = env.get("LISTEN_FDS", "")
    if not count.isdigit() or int(count) == 0:
        return {}
    pid = env.get("LISTEN_PID", "")
    if pid and pid != str(os.getpid()):
        return {}
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    sockets: dict[str, socket.socket] = {}
    for index in range(int(count)):
        fd = SD_LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        name = names[index] if index < len(names) and names[index] else f"fd{fd}"
        sockets[name] = socket.socket(fileno=fd)
    return sockets
