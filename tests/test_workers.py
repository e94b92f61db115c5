"""``workers = N``: a supervisor, N worker processes on one SO_REUSEPORT port, one SQLite inbox.

Everything here is real: subprocesses started as a user starts them, TLS handshakes on
fresh connections (so the kernel spreads them over the workers by source port), SQLite
files read back with ``events list``, and signals (SIGKILL, SIGHUP, SIGTERM) sent by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import Answer, Pki, ServerProcess, client_context, config_text, https_post, pix, run_cli
from test_operations import Swappable, served_subject

WAIT = 30.0  # the longest any single wait here may take (seconds)
ACCEPTED = {"route": "/webhook", "provider": "efi", "outcome": "accepted"}


# --- helpers -----------------------------------------------------------------------------------------

class Supervised(ServerProcess):
    """A ``serve`` process that remembers every pid it had (supervisor and workers), to clean up orphans."""

    def __init__(self, *args: str, **popen: object) -> None:
        super().__init__(*args, **popen)
        self.seen: set[int] = set()

    def start(self, timeout: float = WAIT) -> int:
        port = super().start(timeout)
        self.pids()
        return port

    def pids(self) -> list[int]:
        found = super().pids()
        self.seen.update(found)
        return found

    def workers(self) -> list[int]:
        """The worker processes: the supervisor's children."""
        return self.pids()[1:]

    def worker_admin_ports(self, port: int) -> list[int]:
        """Each worker's loopback admin port (logged at debug level only): its listening socket besides ``port``."""
        found = []
        for pid in self.workers():
            others = listening_ports(pid) - {port}
            assert len(others) == 1, f"worker {pid} listens on {others} besides {port}"
            found.append(others.pop())
        return found

    def admin_port(self) -> int:
        """The supervisor's admin port, from its log."""
        match = re.search(r"admin \(metrics, health\) on http://[^ ]*:(\d+)", "".join(self.output))
        assert match, "no admin address logged:\n" + "".join(self.output)
        return int(match.group(1))

    def count(self, text: str) -> int:
        return "".join(self.output).count(text)

    def wait_for_count(self, text: str, times: int, timeout: float = WAIT) -> None:
        wait_until(lambda: self.count(text) >= times, timeout,
                   lambda: f"{text!r} {times} times in output:\n" + "".join(self.output))

    def cleanup(self) -> None:
        """SIGKILL the supervisor and any worker it left behind (only pids this server had)."""
        self.kill()
        for pid in self.seen:
            if alive(pid) and b"mtls_receiver" in Path(f"/proc/{pid}/cmdline").read_bytes():  # not a reused pid
                os.kill(pid, signal.SIGKILL)


Serve = Callable[..., tuple[Supervised, int]]  # (config file or None, workers=2, **config_text args) -> (server, port)


@pytest.fixture
def serve(tmp_path: Path, pki: Pki) -> Iterator[Serve]:
    """Start ``mtls-receiver serve`` on a config file; every server started is killed at teardown."""
    started: list[Supervised] = []

    def start(config: Path | None = None, workers: int = 2, **config_args: object) -> tuple[Supervised, int]:
        if config is None:
            config = tmp_path / "config.toml"
            text = config_text(pki, **config_args)  # type: ignore[arg-type]
            config.write_text(f"workers = {workers}\n{text}", encoding="utf-8")
        server = Supervised("serve", "--config", str(config))
        started.append(server)
        return server, server.start()

    yield start
    for server in started:
        server.cleanup()


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    """Poll ``condition`` every 50 ms; fail with ``what()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what()}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie may linger if init does not reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def listening_ports(pid: int) -> set[int]:
    """TCP ports a process has listening sockets on: its socket inodes matched in /proc/net/tcp{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET on an admin port: status and body (a 503 is an answer, not an error)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def accepted_requests(port: int) -> float:
    """``mtls_receiver_requests_total`` of accepted Efí requests on /webhook, from an admin port's /metrics."""
    status, text = http_get(port, "/metrics")
    assert status == 200, text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "mtls_receiver_requests_total" and sample.labels == ACCEPTED)


def stored_keys(config: Path) -> list[str]:
    """The dedup keys (Pix endToEndIds) of every event in the inbox."""
    listed = run_cli("events", "list", "--config", str(config), "--json", "--limit", "100000", timeout=WAIT)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line)["dedup_key"] for line in listed.stdout.splitlines() if line.strip()]


def port_is_free(port: int) -> bool:
    """A plain socket (SO_REUSEADDR, as servers bind; no SO_REUSEPORT) can listen on the port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


async def post_pix(port: int, context: ssl.SSLContext, e2e: str) -> Answer:
    """One Pix notification on a fresh TLS connection."""
    return await https_post(port, "/webhook/pix", {"pix": [pix(e2e)]}, context)


async def send_all(port: int, context: ssl.SSLContext, e2es: Iterable[str], senders: int = 4,
                   on_answer: Callable[[str, Answer], None] = lambda e2e, answer: None) -> dict[str, Answer | OSError]:
    """Each endToEndId once, by ``senders`` concurrent senders; a connection that fails gives its OSError."""
    results: dict[str, Answer | OSError] = {}
    queue = iter(e2es)

    async def sender() -> None:
        for e2e in queue:  # shared: each id is taken by one sender
            try:
                results[e2e] = answer = await post_pix(port, context, e2e)
            except OSError as exc:  # reset, refused, TLS EOF, timeout
                results[e2e] = exc
                continue
            on_answer(e2e, answer)

    await asyncio.wait_for(asyncio.gather(*(sender() for _ in range(senders))), WAIT)
    return results


def statuses(results: dict[str, Answer | OSError]) -> list[int | str]:
    return [r.status if isinstance(r, Answer) else type(r).__name__ for r in results.values()]


# --- tests -------------------------------------------------------------------------------------------

def test_two_workers_share_one_port_and_the_supervisor_sums_their_metrics(serve: Serve, tmp_path: Path,
                                                                         pki: Pki) -> None:
    server, port = serve()
    assert "(main, 2 workers, bound with SO_REUSEPORT)" in "".join(server.output)
    assert len(server.pids()) == 3  # the supervisor and two workers
    sent = [f"E-SPREAD-{i:03d}" for i in range(60)]

    results = asyncio.run(send_all(port, client_context(pki, pki.client), sent))

    assert statuses(results) == [200] * 60
    keys = stored_keys(tmp_path / "config.toml")
    assert sorted(keys) == sent
    # each worker counts its own share (60 fresh connections from 60 source ports: both get some)...
    shares = [accepted_requests(admin) for admin in server.worker_admin_ports(port)]
    assert len(shares) == 2 and all(share > 0 for share in shares), shares
    # ... and the supervisor's /metrics adds them up
    assert sum(shares) == 60
    assert accepted_requests(server.admin_port()) == 60
    assert http_get(server.admin_port(), "/readyz")[0] == 200


def test_the_same_event_on_both_workers_is_stored_once(serve: Serve, tmp_path: Path, pki: Pki) -> None:
    server, port = serve()
    context = client_context(pki, pki.client)

    async def at_once() -> list[Answer]:
        return await asyncio.wait_for(asyncio.gather(*(post_pix(port, context, "E-TWICE") for _ in range(20))), WAIT)

    answers = asyncio.run(at_once())

    assert [answer.status for answer in answers] == [200] * 20
    assert stored_keys(tmp_path / "config.toml") == ["E-TWICE"]
    server.wait_for_count("status=200", 20)  # every answer is logged before it is sent; the pipe may lag
    assert server.count("stored=1 duplicates=0") == 1 and server.count("stored=0 duplicates=1") == 19
    shares = [accepted_requests(admin) for admin in server.worker_admin_ports(port)]
    assert all(share > 0 for share in shares), f"one worker took all 20 connections: {shares}"


def test_a_worker_killed_under_load_is_replaced_and_loses_no_acknowledged_event(serve: Serve, tmp_path: Path,
                                                                               pki: Pki) -> None:
    server, port = serve()
    supervisor, victim, survivor = server.pids()
    context = client_context(pki, pki.client)
    acknowledged: list[str] = []

    def kill_at_fifty(e2e: str, answer: Answer) -> None:
        if answer.status == 200:
            acknowledged.append(e2e)
            if len(acknowledged) == 50:
                os.kill(victim, signal.SIGKILL)

    results = asyncio.run(send_all(port, context, (f"E-LOAD-{i:03d}" for i in range(300)), on_answer=kill_at_fifty))

    assert len(acknowledged) >= 50
    odd = {e2e: r for e2e, r in results.items() if isinstance(r, Answer) and r.status != 200}
    assert not odd, odd  # a request either failed with its connection, or was answered 200
    server.wait_for_output(f"(pid {victim}) exited with signal 9; starting another", WAIT)
    wait_until(lambda: http_get(server.admin_port(), "/readyz")[0] == 200, 20,
               lambda: "/readyz never 200 again:\n" + "".join(server.output))
    after = asyncio.run(send_all(port, context, [f"E-AFTER-{i}" for i in range(10)]))
    assert statuses(after) == [200] * 10

    pids = server.pids()
    assert server.proc is not None and server.proc.poll() is None and pids[0] == supervisor
    assert len(pids) == 3 and victim not in pids and survivor in pids
    stored = set(stored_keys(tmp_path / "config.toml"))
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged events lost: {sorted(missing)[:5]}"
    assert stored <= set(results) | set(after)  # nothing stored that was not sent
    assert {f"E-AFTER-{i}" for i in range(10)} <= stored


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(serve: Serve, tmp_path: Path, pki: Pki) -> None:
    server, port = serve()
    workers = server.workers()
    assert len(workers) == 2
    assert asyncio.run(post_pix(port, client_context(pki, pki.client), "E-BEFORE")).status == 200

    server.kill()  # SIGKILL: no handler runs, only the lifeline pipe tells the workers

    wait_until(lambda: not any(alive(pid) for pid in workers), WAIT,
               lambda: f"workers still running: {[pid for pid in workers if alive(pid)]}\n" + "".join(server.output))
    server.wait_for_count("the supervisor is gone; stopping", 2)
    assert port_is_free(port), "a worker's listening socket outlived it"
    # the same config, now on that fixed port, starts again and still has the inbox
    config = tmp_path / "config.toml"
    config.write_text("workers = 2\n" + config_text(pki, port=port), encoding="utf-8")
    again, again_port = serve(config)
    assert again_port == port
    assert asyncio.run(post_pix(port, client_context(pki, pki.client), "E-AGAIN")).status == 200
    assert sorted(stored_keys(config)) == ["E-AGAIN", "E-BEFORE"]
    assert len(again.pids()) == 3


def test_sighup_reloads_supervisor_and_workers_but_not_a_change_of_workers(serve: Serve, tmp_path: Path,
                                                                           pki: Pki) -> None:
    files = Swappable(tmp_path, pki)
    config = tmp_path / "config.toml"
    first = config.read_text(encoding="utf-8")
    config.write_text("workers = 2\n" + first, encoding="utf-8")
    server, port = serve(config)
    pids = sorted(server.pids())
    efi = files.context(pki.client)
    assert {served_subject(port, efi) for _ in range(20)} == {"first"}

    files.install_server_cert("second")
    server.signal(signal.SIGHUP)
    server.wait_for_count("reloaded", 3)  # the supervisor, then each worker

    # 20 fresh connections reach both workers: each serves the new certificate
    assert {served_subject(port, efi) for _ in range(20)} == {"second"}

    config.write_text("workers = 3\n" + first, encoding="utf-8")
    server.signal(signal.SIGHUP)
    server.wait_for_output("workers changed (2 -> 3): restart to apply")
    assert "reload rejected, still serving the previous configuration" in "".join(server.output)
    answers = asyncio.run(send_all(port, efi, [f"E-KEPT-{i}" for i in range(10)]))
    assert statuses(answers) == [200] * 10
    assert {served_subject(port, efi) for _ in range(10)} == {"second"}
    assert sorted(server.pids()) == pids  # no worker added, none restarted
    assert server.count("reloaded") == 3 and server.count("workers changed") == 1


def test_sigterm_stops_the_supervisor_and_every_worker(serve: Serve, tmp_path: Path, pki: Pki) -> None:
    server, port = serve()
    workers = server.workers()
    assert len(workers) == 2
    assert asyncio.run(post_pix(port, client_context(pki, pki.client), "E-TERM")).status == 200

    assert server.terminate() == 0

    assert [pid for pid in workers if alive(pid)] == []  # the supervisor waited for them
    server.wait_for_count("stopped", 3)  # two workers, then the supervisor
    assert "".join(server.output).rstrip().endswith("stopped")
    assert port_is_free(port)
    assert stored_keys(tmp_path / "config.toml") == ["E-TERM"]


def test_a_replacement_worker_serves_the_supervisors_config_not_a_rejected_file(serve: Serve, tmp_path: Path,
                                                                                pki: Pki) -> None:
    server, port = serve()
    config = tmp_path / "config.toml"
    config.write_text(config.read_text() + "\nbogus = 1\n", encoding="utf-8")  # broken: the reload is refused
    server.signal(signal.SIGHUP)
    server.wait_for_output("reload rejected, still serving the previous configuration")
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_for_output(f"(pid {victim}) exited with signal 9; starting another")
    wait_until(lambda: http_get(server.admin_port(), "/readyz")[0] == 200, WAIT,
               lambda: "no replacement serving:\n" + "".join(server.output))
    assert len(server.workers()) == 2 and victim not in server.workers()
    results = asyncio.run(send_all(port, client_context(pki, pki.client), [f"E-REPLACED-{i}" for i in range(20)]))
    assert statuses(results) == [200] * 20


def test_summed_counters_never_go_down_when_a_worker_exits(serve: Serve, pki: Pki) -> None:
    server, port = serve()
    context = client_context(pki, pki.client)
    assert statuses(asyncio.run(send_all(port, context, [f"E-COUNT-{i}" for i in range(40)]))) == [200] * 40
    admin = server.admin_port()
    assert accepted_requests(admin) == 40
    shares = dict(zip(server.workers(), (accepted_requests(p) for p in server.worker_admin_ports(port))))
    victim = next(pid for pid, share in shares.items() if share > 0)  # a worker whose counts would vanish
    os.kill(victim, signal.SIGKILL)
    server.wait_for_output(f"(pid {victim}) exited with signal 9; starting another")
    assert accepted_requests(admin) == 40  # its counts are kept, not lost (Prometheus would see a reset)
    wait_until(lambda: http_get(admin, "/readyz")[0] == 200, WAIT, lambda: "".join(server.output))
    assert statuses(asyncio.run(send_all(port, context, [f"E-COUNT-MORE-{i}" for i in range(10)]))) == [200] * 10
    assert accepted_requests(admin) == 50
