"""Several worker processes on one port (``workers = N``).

Each worker is a whole receiver (TLS, verification, its own store connection and
group commit) on a listening socket of its own: the supervisor binds N sockets to
the port with SO_REUSEPORT and the kernel spreads new connections over them. The
supervisor keeps what must be one: the forwarder (one process leases the outbox),
the admin port (the workers' counts added up), systemd's notifications, signals,
and a new worker for one that died.

Workers are fresh interpreters running ``serve`` again, not forks of a process that
already has an event loop and threads. They learn their sockets and three pipes from
``MTLS_RECEIVER_WORKER``: on the *config* pipe the supervisor hands over the configuration
it serves (so a worker started after a rejected reload serves what the others serve, not
the file on disk); on the *ready* pipe a worker reports its admin port once it serves; the
*lifeline* is never written, so its end of file tells every worker that the supervisor is
gone (even after ``kill -9``), and they stop as on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import socket
from dataclasses import asdict, dataclass

import aiohttp

from .config import Config
from .listener import bind
from .metrics import SampleKey, counted
from .server import SHUTDOWN_GRACE, SUPERVISOR, WORKER, Receiver, bind_errors, match_sockets, serve_until_stopped
from .systemd import Notifier, listen_sockets

__all__ = ["WORKER_ENV", "WorkerPool", "WorkerSpec", "listening_sockets", "serve_worker", "supervise", "worker_spec"]

log = logging.getLogger("mtls_receiver")

WORKER_ENV = "MTLS_RECEIVER_WORKER"
RESTART_DELAY = 1.0  # seconds before a worker that died is replaced (no busy loop if it keeps dying)
START_TIMEOUT = 60.0
_NOT_FOR_WORKERS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class WorkerFailed(Exception):
    """A worker exited before it was ready to serve."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is handed: its number, the pipes' descriptors and its listening sockets."""

    index: int
    lifeline: int
    ready: int
    config: int
    sockets: dict[str, int]  # listener name -> file descriptor

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    def read_config(self) -> Config:
        """The configuration the supervisor serves (validated there), from the config pipe."""
        with os.fdopen(self.config, "rb") as pipe:
            config: Config = pickle.load(pipe)
        return config


def worker_spec(environ: dict[str, str] | None = None) -> WorkerSpec | None:
    """This process's spec when a supervisor started it, else None."""
    text = (os.environ if environ is None else environ).get(WORKER_ENV)
    return WorkerSpec(**json.loads(text)) if text else None


def listening_sockets(config: Config, count: int, inherited: dict[str, socket.socket]) -> dict[str, list[socket.socket]]:
    """``count`` sockets per listener on one port; a socket systemd passed is shared by all workers."""
    matched = match_sockets(config, inherited)
    sockets: dict[str, list[socket.socket]] = {}
    for listener in config.listeners:
        if listener.name in matched:
            sockets[listener.name] = [matched[listener.name]] * count
            continue
        with bind_errors(config, f"{config.listener_key(listener.name)}.address", listener.address):
            first = bind(listener, reuse_port=True)
            port = int(first.getsockname()[1])  # the config may say port 0
            sockets[listener.name] = [first, *(bind(listener, port, reuse_port=True) for _ in range(count - 1))]
    return sockets


class WorkerPool:
    """The supervisor's view of its workers: start them, replace one that dies, signal, stop."""

    def __init__(self, config: Config, sockets: dict[str, list[socket.socket]], command: list[str]) -> None:
        self.config, self.sockets, self.command = config, sockets, command
        self.count = config.workers
        self.stopping = False
        self._procs: list[asyncio.subprocess.Process | None] = [None] * self.count
        self._admin_ports: list[int | None] = [None] * self.count
        self._texts: list[str | None] = [None] * self.count  # each worker's metrics, last read
        self._retired: dict[SampleKey, float] = {}  # counts of workers that exited: totals never go down
        self._lifeline, self._lifeline_end = os.pipe()  # we never write: our death is its end of file
        self._keepers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Start every worker; raises WorkerFailed when one cannot start the first time."""
        self._session = aiohttp.ClientSession()
        loop = asyncio.get_running_loop()
        started = [loop.create_future() for _ in range(self.count)]
        self._keepers = [asyncio.create_task(self._keep(index, started[index])) for index in range(self.count)]
        await asyncio.gather(*started)

    async def _keep(self, index: int, started: asyncio.Future[None]) -> None:
        while not self.stopping:
            try:
                process = await self._spawn(index)
            except WorkerFailed as exc:
                if not started.done():
                    started.set_exception(exc)
                    return
                log.error("%s; trying again in %gs", exc, RESTART_DELAY)
                await asyncio.sleep(RESTART_DELAY)
                continue
            if not started.done():
                started.set_result(None)
            code = await process.wait()
            self._admin_ports[index] = None
            counted([self._texts[index] or ""], into=self._retired)
            self._texts[index] = None
            if self.stopping:
                return
            log.error("worker %d (pid %d) exited with %s; starting another", index, process.pid, _exit_status(code))
            await asyncio.sleep(RESTART_DELAY)

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        ready, ready_end = os.pipe()
        config_end, config = os.pipe()
        fds = {name: sockets[index].fileno() for name, sockets in self.sockets.items()}
        spec = WorkerSpec(index=index, lifeline=self._lifeline, ready=ready_end, config=config_end, sockets=fds)
        env = {key: value for key, value in os.environ.items() if key not in _NOT_FOR_WORKERS}
        env[WORKER_ENV] = spec.to_env()
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command, env=env, pass_fds=(self._lifeline, ready_end, config_end, *fds.values()))
        finally:
            os.close(ready_end)
            os.close(config_end)
        await asyncio.to_thread(_write_all, config, pickle.dumps(self.config))
        self._procs[index] = process
        try:
            line = await asyncio.wait_for(asyncio.to_thread(_read_all, ready), START_TIMEOUT)
        except TimeoutError:
            process.kill()
            raise WorkerFailed(f"worker {index} did not start within {START_TIMEOUT:g}s") from None
        if not line.strip().isdigit():
            raise WorkerFailed(f"worker {index} exited during start with {_exit_status(await process.wait())}")
        self._admin_ports[index] = int(line)
        return process

    @property
    def ready(self) -> bool:
        """Every worker started and still running."""
        return all(port is not None for port in self._admin_ports) and all(
            process is not None and process.returncode is None for process in self._procs)

    def signal(self, number: int) -> None:
        for process in self._procs:
            if process is not None and process.returncode is None:
                process.send_signal(number)

    def reloaded(self, config: Config) -> None:
        """After the supervisor accepted a reload: workers that serve reload too; one still
        starting (whose SIGHUP handler may not be installed yet) gets this config from its pipe
        only if spawned from now on, and reloads with the next SIGHUP."""
        self.config = config
        for process, port in zip(self._procs, self._admin_ports):
            if process is not None and process.returncode is None and port is not None:
                process.send_signal(signal.SIGHUP)

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """SIGTERM to every worker (each finishes its requests in flight), SIGKILL past the grace."""
        self.stopping = True
        self.signal(signal.SIGTERM)
        running = [process for process in self._procs if process is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), grace + 5)
        except TimeoutError:
            log.warning("stop: workers still running after %gs; killing them", grace + 5)
            self.signal(signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in running))
        for keeper in self._keepers:
            keeper.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        for fd in (self._lifeline, self._lifeline_end):
            os.close(fd)
        for sockets in self.sockets.values():
            for sock in set(sockets):
                sock.close()

    async def scrape(self) -> dict[SampleKey, float]:
        """The workers' counts added up: each running worker's, read from its loopback admin port
        (its last reading if it does not answer now), and those of workers that have exited."""
        assert self._session is not None
        for index, port in enumerate(self._admin_ports):
            if port is None:
                continue
            try:
                async with self._session.get(f"http://127.0.0.1:{port}/metrics",
                                             timeout=aiohttp.ClientTimeout(total=2)) as response:
                    self._texts[index] = await response.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("metrics of worker %d not read (its last reading is used): %s", index, exc)
        return counted([text for text in self._texts if text], into=dict(self._retired))

    def addresses(self) -> list[tuple[str, str, str]]:
        """(listener, host:port, how) of every listener: its socket was bound here, or passed by systemd."""
        found = []
        for name, sockets in self.sockets.items():
            host, port = sockets[0].getsockname()[:2]
            how = "inherited socket, shared" if len(set(sockets)) == 1 else "bound with SO_REUSEPORT"
            found.append((name, f"[{host}]:{port}" if ":" in host else f"{host}:{port}", how))
        return found

    def summary(self) -> str:
        return f"listening on {', '.join(address for _, address, _ in self.addresses())} with {self.count} workers"


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as pipe:
        try:
            pipe.write(data)
        except BrokenPipeError:  # the worker died at once; _spawn reports it
            pass


def _read_all(fd: int) -> str:
    """What a worker wrote on its ready pipe, up to end of file."""
    chunks = []
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.read(64):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _exit_status(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"code {code}"


async def supervise(config: Config, command: list[str]) -> None:
    """The supervisor: sockets, store, forwarder and admin port here; requests in ``config.workers`` workers."""
    pool = WorkerPool(config, listening_sockets(config, config.workers, listen_sockets()), command)
    receiver = Receiver(config, role=SUPERVISOR)
    receiver.workers = pool

    async def start() -> None:
        await receiver.start()
        try:
            await pool.start()
        except BaseException:
            await pool.stop()
            await receiver.stop()
            raise
        for listener, address, how in pool.addresses():
            log.info("listening on https://%s (%s, %d workers, %s)", address, listener, pool.count, how)

    async def stop() -> None:
        await pool.stop()
        await receiver.stop()

    await serve_until_stopped(receiver, start, stop, Notifier(), on_reload=lambda: pool.reloaded(receiver.config))


async def serve_worker(config: Config, spec: WorkerSpec) -> None:
    """One worker: serve its sockets until SIGTERM, or until the supervisor is gone."""
    sockets = {name: socket.socket(fileno=fd) for name, fd in spec.sockets.items()}
    receiver = Receiver(config, role=WORKER)

    async def start() -> None:
        await receiver.start(sockets)
        os.write(spec.ready, f"{receiver.admin_port}\n".encode())
        os.close(spec.ready)

    loop = asyncio.get_running_loop()
    orphaned = asyncio.Event()

    def supervisor_gone() -> None:
        loop.remove_reader(spec.lifeline)
        log.warning("worker %d: the supervisor is gone; stopping", spec.index)
        orphaned.set()

    loop.add_reader(spec.lifeline, supervisor_gone)
    await serve_until_stopped(receiver, start, receiver.stop, Notifier({}), also_stop=orphaned)
