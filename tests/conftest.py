"""Shared fixtures: a throwaway PKI, configs written as a user would, a running receiver, TLS clients."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import trustme

from mtls_receiver.config import Config, load_config
from mtls_receiver.lifecycle import Receiver

NOW = datetime.now(timezone.utc)


@dataclass(frozen=True)
class Pki:
    """PEM files on disk, shaped like production: Efí's root + intermediate sign the client."""

    dir: Path
    server_ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path  # Efí-like root + intermediate bundle
    client: Path
    foreign_client: Path
    expired_client: Path
    future_client: Path
    client_der: bytes


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    server_ca = trustme.CA()
    server = server_ca.issue_cert("localhost", "127.0.0.1")
    root = trustme.CA(organization_name="Efi-like root")
    intermediate = root.create_child_ca()
    client = intermediate.issue_cert(common_name="efi-like client", organization_name="Efi-like")
    expired = intermediate.issue_cert(
        common_name="expired client", not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1)
    )
    future = intermediate.issue_cert(
        common_name="future client", not_before=NOW + timedelta(days=1), not_after=NOW + timedelta(days=30)
    )
    foreign = trustme.CA(organization_name="Foreign").issue_cert(common_name="foreign client")

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    return Pki(
        dir=directory,
        server_ca=write("server-ca.pem", server_ca.cert_pem.bytes()),
        server_cert=write("server.pem", b"".join(b.bytes() for b in server.cert_chain_pems)),
        server_key=write("server.key", server.private_key_pem.bytes()),
        client_ca=write("client-ca.pem", root.cert_pem.bytes() + intermediate.cert_pem.bytes()),
        client=write("client.pem", client.private_key_and_cert_chain_pem.bytes()),
        foreign_client=write("foreign.pem", foreign.private_key_and_cert_chain_pem.bytes()),
        expired_client=write("expired.pem", expired.private_key_and_cert_chain_pem.bytes()),
        future_client=write("future.pem", future.private_key_and_cert_chain_pem.bytes()),
        client_der=ssl.PEM_cert_to_DER_cert(client.cert_chain_pems[0].bytes().decode()),
    )


def config_text(pki: Pki, *, client_certs: str = "required", port: int = 0, routes: str | None = None,
                store: str = "inbox.db", min_tls: str = "1.2", host: str = "127.0.0.1",
                listener_extra: str = "") -> str:
    """A config as a user writes it; routes default to one Efí mTLS route at /webhook."""
    routes = routes if routes is not None else '[[routes]]\npath = "/webhook"\nprovider = "efi"\nmode = "mtls"\n'
    return (
        f'[[listeners]]\nname = "main"\naddress = "{host}:{port}"\n'
        f'cert = "{pki.server_cert}"\nkey = "{pki.server_key}"\n'
        f'client_certs = "{client_certs}"\nclient_ca = "{pki.client_ca}"\nmin_tls = "{min_tls}"\n{listener_extra}\n'
        f"{routes}\n[store]\npath = \"{store}\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n"
    )


@pytest.fixture
def write_config(tmp_path: Path, pki: Pki) -> Callable[..., Config]:
    def write(**kwargs: object) -> Config:
        path = tmp_path / "config.toml"
        path.write_text(config_text(pki, **kwargs), encoding="utf-8")  # type: ignore[arg-type]
        return load_config(path)

    return write


@pytest.fixture
async def start_receiver() -> AsyncIterator[Callable[[Config], "asyncio.Future[Receiver]"]]:
    started: list[Receiver] = []

    async def start(config: Config) -> Receiver:
        receiver = Receiver(config)
        await receiver.start()
        started.append(receiver)
        return receiver

    yield start  # type: ignore[misc]
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def receiver(write_config: Callable[..., Config], start_receiver: Callable[[Config], object]) -> Receiver:
    return await start_receiver(write_config())  # type: ignore[misc]


def client_context(pki: Pki, cert: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.server_ca))
    if cert is not None:
        context.load_cert_chain(cert)
    return context


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names


async def https_post(port: int, path: str, body: bytes | str | dict, context: ssl.SSLContext,
                     method: str = "POST", headers: dict[str, str] | None = None) -> Answer:
    """One request on a fresh TLS connection, written by hand so nothing hides what was sent.

    Raises whatever the TLS layer raises when the server refuses the handshake.
    """
    if isinstance(body, dict):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    if "content-type" not in {name.lower() for name in headers or {}}:
        extra += "Content-Type: application/json\r\n"
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"), 10
    )
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    if not raw:
        raise ConnectionResetError("server closed the connection without an answer")
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return Answer(status=int(lines[0].split()[1]), body=payload, headers={k.lower(): v for k, v in fields.items()})


def pix(e2e: str, valor: str = "10.00", **extra: object) -> dict[str, object]:
    item: dict[str, object] = {"endToEndId": e2e, "valor": valor, "horario": "2026-11-23T10:00:00.000Z"}
    item.update(extra)
    return item


PYTHON = sys.executable
REFUSED = (ssl.SSLError, ConnectionResetError, BrokenPipeError)  # what a client sees of a refused handshake


class ServerProcess:
    """``mtls-receiver serve`` as a real subprocess, as a user runs it; the port is read from its log."""

    def __init__(self, *args: str, **popen: object) -> None:
        self.args = [PYTHON, "-m", "mtls_receiver", *args]
        self.popen = popen  # env, pass_fds, preexec_fn...
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 20.0) -> int:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     **self.popen)  # type: ignore[call-overload]
        ready: "queue.Queue[int]" = queue.Queue()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        try:
            return ready.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise AssertionError("server did not start:\n" + "".join(self.output)) from None

    def _read(self, ready: "queue.Queue[int]") -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            match = re.search(r"listening on https://[^ ]*:(\d+)", line)
            if match:
                ready.put(int(match.group(1)))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def pids(self) -> list[int]:
        """The server's process and its workers (``workers = N`` starts N child processes)."""
        assert self.proc is not None
        found, frontier = [self.proc.pid], [self.proc.pid]
        while frontier:
            for children in Path(f"/proc/{frontier.pop()}/task").glob("*/children"):
                kids = [int(pid) for pid in children.read_text().split()]
                found += kids
                frontier += kids
        return found

    def signal(self, number: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(number)

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in "".join(self.output):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in output:\n" + "".join(self.output))
            time.sleep(0.02)


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "mtls_receiver", *args], capture_output=True, text=True, timeout=timeout)


PG_ADMIN_DSN = os.environ.get("MTLS_RECEIVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards (server on 127.0.0.1:5432, trust auth)."""
    asyncpg = pytest.importorskip("asyncpg")
    name = f"mtls_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN} ({exc}); CI must run these tests")
        pytest.skip(f"no PostgreSQL reachable at {PG_ADMIN_DSN}: {exc}")
    yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
