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
gone (even after ``kill -9``), and they stop as on SIGTERM. A memfd holds the listeners'
open connections per address for all workers (see :mod:`.admission`), so the connection
limits hold for the listener, not for each worker.

A worker that is alive but no use is replaced too: the supervisor sends each worker a
heartbeat (GET /readyz on its admin port) every ``health.heartbeat_interval``. A worker that
answers none for ``health.hung_after`` (stopped, deadlocked, spinning) or answers "not ready"
(its write probe cannot commit) for ``health.unready_after`` is killed with SIGKILL and
started again, like one that died. An unready worker is replaced only while the supervisor's
own write probe commits: when the store itself fails (disk full, database down), a new worker
would fail the same way, and the old one keeps answering 503 at once rather than not at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import aiohttp

from .admission import ConnectionTable
from .config import Config, HealthConfig
from .lifecycle import (
    SHUTDOWN_GRACE,
    SUPERVISOR,
    WORKER,
    Receiver,
    bind_errors,
    match_sockets,
    serve_until_stopped,
)
from .listener import bind
from .metrics import SampleKey, counted
from .systemd import Notifier, listen_sockets

__all__ = [
    "WORKER_ENV",
    "Heartbeats",
    "WorkerPool",
    "WorkerSpec",
    "listening_sockets",
    "serve_worker",
    "supervise",
    "worker_spec",
]

log = logging.getLogger("mtls_receiver")

WORKER_ENV = "MTLS_RECEIVER_WORKER"
RESTART_DELAY = 1.0  # seconds before a worker that died is replaced (no busy loop if it keeps dying)
START_TIMEOUT = 60.0
_NOT_FOR_WORKERS = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)


STALE_AFTER = 3  # heartbeat intervals: a worker whose last "ready" is older is not counted as ready


class WorkerFailed(Exception):
    """A worker exited before it was ready to serve."""


@dataclass
class Heartbeats:
    """What the heartbeats tell of one worker, in monotonic seconds, and the rules read from it.

    No I/O here, so the rules (when is a worker ready, hung, unready for too long) are tested alone.
    """

    answered: float  # the last answer, ready or not (the worker reporting it serves counts as one)
    ready: bool = False  # what the last answer said
    unready_since: float | None = None  # the first "not ready" of the answers since the last "ready"
    excused: bool = False  # unready, but so is the supervisor: the store fails, not the worker (said once)

    @classmethod
    def started(cls, now: float) -> Heartbeats:
        return cls(answered=now, unready_since=now)

    def heard(self, ready: bool | None, now: float) -> None:
        """One heartbeat's outcome: ready, not ready, or None for no answer in time."""
        if ready is None:
            return
        self.answered, self.ready = now, ready
        if ready:
            self.unready_since, self.excused = None, False
        elif self.unready_since is None:
            self.unready_since = now

    def serving(self, now: float, health: HealthConfig) -> bool:
        """It said "ready", recently: one that stops answering is not ready for long."""
        return self.ready and now - self.answered <= STALE_AFTER * health.heartbeat_interval

    def hung(self, now: float, health: HealthConfig) -> str | None:
        """Why it counts as hung (alive, not answering), or None."""
        silent = now - self.answered
        if silent < health.hung_after:
            return None
        return f"answered no heartbeat for {silent:.1f}s (health.hung_after = {health.hung_after:g})"

    def unready(self, now: float, health: HealthConfig, store_ok_since: float | None) -> str | None:
        """Why it must be replaced for being unable to commit, or None: it has been for ``unready_after``
        while the store could commit (``store_ok_since``: since when the supervisor's probe commits;
        None: it does not now). When the store itself failed, the worker gets ``unready_after`` from
        the moment it is back to recover, as it then should."""
        if self.unready_since is None or store_ok_since is None:
            return None
        if now - max(self.unready_since, store_ok_since) < health.unready_after:
            return None
        lasting = now - self.unready_since
        return (
            f"could not commit to the inbox for {lasting:.1f}s while the supervisor could"
            f" (health.unready_after = {health.unready_after:g})"
        )


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is handed: its number, the pipes' descriptors and its listening sockets."""

    index: int
    lifeline: int
    ready: int
    config: int
    connections: int  # the memfd of the connection counts (admission.ConnectionTable)
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


def listening_sockets(
    config: Config, count: int, inherited: dict[str, socket.socket]
) -> dict[str, list[socket.socket]]:
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
            sockets[listener.name] = [
                first,
                *(bind(listener, port, reuse_port=True) for _ in range(count - 1)),
            ]
    return sockets


class WorkerPool:
    """The supervisor's view of its workers: start them, replace one that dies, signal, stop."""

    def __init__(
        self,
        config: Config,
        sockets: dict[str, list[socket.socket]],
        command: list[str],
        can_commit: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.config, self.sockets, self.command = config, sockets, command
        self.count = config.workers
        self.stopping = False
        self.can_commit = can_commit  # the supervisor's own write probe: is the store itself failing?
        self.connections = ConnectionTable.create(len(config.listeners), self.count)
        self._procs: list[asyncio.subprocess.Process | None] = [None] * self.count
        self._admin_ports: list[int | None] = [None] * self.count
        self._heartbeats: list[Heartbeats | None] = [None] * self.count
        self._store_probe = asyncio.Lock()
        self._store_probed_at: float | None = None
        self._store_ok: float | None = None  # since when the supervisor's write probe commits
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
        self._keepers = [
            asyncio.create_task(self._keep(index, started[index])) for index in range(self.count)
        ]
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
            watch = asyncio.create_task(self._heartbeat(index, process))
            code = await process.wait()
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            self._heartbeats[index] = None
            self._admin_ports[index] = None
            counted([self._texts[index] or ""], into=self._retired)
            self._texts[index] = None
            if self.stopping:
                return
            log.error(
                "worker %d (pid %d) exited with %s; starting another", index, process.pid, _exit_status(code)
            )
            await asyncio.sleep(RESTART_DELAY)

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        self.connections.clear_worker(index)  # the connections its predecessor counted died with it
        ready, ready_end = os.pipe()
        config_end, config = os.pipe()
        fds = {name: sockets[index].fileno() for name, sockets in self.sockets.items()}
        assert self.connections.fd is not None
        spec = WorkerSpec(
            index=index,
            lifeline=self._lifeline,
            ready=ready_end,
            config=config_end,
            connections=self.connections.fd,
            sockets=fds,
        )
        env = {key: value for key, value in os.environ.items() if key not in _NOT_FOR_WORKERS}
        env[WORKER_ENV] = spec.to_env()
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                env=env,
                pass_fds=(self._lifeline, ready_end, config_end, self.connections.fd, *fds.values()),
            )
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
            raise WorkerFailed(
                f"worker {index} exited during start with {_exit_status(await process.wait())}"
            )
        self._admin_ports[index] = int(line)
        return process

    @property
    def ready(self) -> bool:
        """Every worker runs and answered its recent heartbeats "ready" (it can commit to the inbox)."""
        now = time.monotonic()
        return all(process is not None and process.returncode is None for process in self._procs) and all(
            beats is not None and beats.serving(now, self.config.health) for beats in self._heartbeats
        )

    async def _heartbeat(self, index: int, process: asyncio.subprocess.Process) -> None:
        """Ask the worker every interval whether it is ready; kill it once it is hung or stays unready
        (``_keep`` then starts another)."""
        port = self._admin_ports[index]
        assert port is not None
        beats = self._heartbeats[index] = Heartbeats.started(time.monotonic())
        while not self.stopping:
            health = self.config.health  # a reload may change it
            asked = time.monotonic()
            was_serving = beats.serving(asked, health)
            answer = await self._ask(port, health.heartbeat_interval)
            beats.heard(answer, time.monotonic())
            if was_serving != beats.serving(time.monotonic(), health) and not self.stopping:
                _log_change(index, process.pid, answer)
            reason = await self._replacement_reason(index, beats, health)
            if reason is not None and not self.stopping:
                log.error("worker %d (pid %d) %s; killing it to start another", index, process.pid, reason)
                process.kill()
                return
            await asyncio.sleep(max(0.0, health.heartbeat_interval - (time.monotonic() - asked)))

    async def _ask(self, port: int, timeout: float) -> bool | None:
        """One heartbeat: the worker's /readyz, answered from its event loop; None if no answer in time."""
        assert self._session is not None
        try:
            async with self._session.get(
                f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def _replacement_reason(self, index: int, beats: Heartbeats, health: HealthConfig) -> str | None:
        """Why the worker must be replaced now, or None. One that cannot commit is replaced only if the
        supervisor can: when the store itself fails, a new worker would not do better."""
        hung = beats.hung(time.monotonic(), health)
        if hung is not None or beats.unready_since is None:
            return hung
        store_ok_since = await self._store_ok_since(health)
        now = time.monotonic()
        reason = beats.unready(now, health, store_ok_since)
        if store_ok_since is None and now - beats.unready_since >= health.unready_after and not beats.excused:
            beats.excused = True
            log.warning(
                "worker %d cannot commit to the inbox, nor can the supervisor: the store itself is"
                " failing; the worker is kept (it answers 503 until the store is back)",
                index,
            )
        return reason

    async def _store_ok_since(self, health: HealthConfig) -> float | None:
        """Since when the supervisor's own write probe commits, None if it does not now. Probed (while a
        worker is unready) at most once per heartbeat interval for all workers; a probe that comes late
        (slow, or the first in a while) starts the count again: the store may only just be back."""
        async with self._store_probe:
            previous = self._store_probed_at
            if previous is not None and time.monotonic() - previous < health.heartbeat_interval:
                return self._store_ok
            ok = self.can_commit is None or await self.can_commit()
            self._store_probed_at = now = time.monotonic()
            if not ok:
                self._store_ok = None
            elif (
                self._store_ok is None
                or previous is None
                or now - previous > STALE_AFTER * health.heartbeat_interval
            ):
                self._store_ok = now
            return self._store_ok

    def signal(self, number: int) -> None:
        for process in self._procs:
            if process is not None and process.returncode is None:
                process.send_signal(number)

    def reloaded(self, config: Config) -> None:
        """After the supervisor accepted a reload: workers that serve reload too; one still
        starting (whose SIGHUP handler may not be installed yet) gets this config from its pipe
        only if spawned from now on, and reloads with the next SIGHUP."""
        self.config = config
        for process, port in zip(self._procs, self._admin_ports, strict=True):
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
        self.connections.close()
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
                async with self._session.get(
                    f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
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
        addresses = ", ".join(address for _, address, _ in self.addresses())
        return f"listening on {addresses} with {self.count} workers"


def _log_change(index: int, pid: int, answer: bool | None) -> None:
    """A worker became ready, or stopped being: why, in one line."""
    if answer:
        log.info("worker %d (pid %d) is ready", index, pid)
    elif answer is None:
        log.warning("worker %d (pid %d) is not ready: it answers no heartbeat", index, pid)
    else:
        log.warning("worker %d (pid %d) is not ready: its write probe cannot commit to the inbox", index, pid)


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
    """The supervisor: sockets, store, forwarder and admin port here; requests in ``config.workers``
    workers."""
    receiver = Receiver(config, role=SUPERVISOR)
    pool = WorkerPool(
        config,
        listening_sockets(config, config.workers, listen_sockets()),
        command,
        can_commit=receiver.can_commit,
    )
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

    await serve_until_stopped(
        receiver, start, stop, Notifier(), on_reload=lambda: pool.reloaded(receiver.config)
    )


async def serve_worker(config: Config, spec: WorkerSpec) -> None:
    """One worker: serve its sockets until SIGTERM, or until the supervisor is gone."""
    sockets = {name: socket.socket(fileno=fd) for name, fd in spec.sockets.items()}
    receiver = Receiver(config, role=WORKER)
    receiver.connections = ConnectionTable.attach(spec.connections, len(config.listeners), config.workers)
    receiver.worker_index = spec.index

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
