"""The benchmark's PSP-like sender and report plumbing (bench/loadgen.py, bench/run.py).

The PSP rows are only worth something if the load generator really writes like a PSP's HTTP client:
a fresh connection per request, the request head and the body as separate TLS records, the TLS
version asked for, the client closing. A real TLS server on loopback records what arrives.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from support import Pki

from mtls_receiver.providers import PROVIDER_NAMES

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass
class Seen:
    """What the server saw on one connection: the TLS version and each record's plaintext, in order."""

    version: str | None = None
    records: list[bytes] = field(default_factory=list)
    client_closed: bool = False


class RecordingServer:
    """A TLS server (client certificate required) answering 200, reading on until the client closes.

    ``SSLSocket.recv`` returns at most one TLS record's plaintext, so ``records`` shows how the
    client split its writes whatever TCP did with the segments.
    """

    def __init__(self, pki: Pki) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        self.context.load_verify_locations(pki.client_ca)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.port = self.listener.getsockname()[1]
        self.seen: list[Seen] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            with self.context.wrap_socket(raw, server_side=True) as tls:
                tls.settimeout(30)
                self.seen.append(self.connection(tls))

    @staticmethod
    def connection(tls: ssl.SSLSocket) -> Seen:
        seen, data = Seen(version=tls.version()), b""
        while True:
            try:
                record = tls.recv(65536)
            except (ssl.SSLError, OSError):
                return seen
            if not record:
                seen.client_closed = True
                return seen
            seen.records.append(record)
            data += record
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length is not None and len(body) >= length:
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if b"\r\nconnection: close\r\n" in head.lower() + b"\r\n":
                    return seen  # the pipelined fresh client waits for the server to close
                data = b""


@pytest.fixture
def recording(pki: Pki) -> Iterator[RecordingServer]:
    server = RecordingServer(pki)
    server.thread.start()
    yield server
    server.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone would not)
    server.listener.close()
    server.thread.join(10)
    assert not server.thread.is_alive()


def _loadgen(pki: Pki, port: int, *flags: str) -> dict[str, object]:
    command = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        "--port",
        str(port),
        "--ca",
        str(pki.server_ca),
        "--cert",
        str(pki.client),
        "--requests",
        "2",
        "--processes",
        "1",
        "--connections",
        "1",
        "--timeout",
        "60",
        *flags,
    ]
    result: dict[str, object] = json.loads(
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    )
    return result


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_psp_client_writes_head_and_body_apart_on_fresh_connections_and_closes(
    pki: Pki, recording: RecordingServer, version: str
) -> None:
    result = _loadgen(pki, recording.port, "--psp", "--tls", version)

    assert result["ok"] == 2 and result["errors"] == 0, result
    assert len(recording.seen) == 2  # a fresh connection per request
    for seen in recording.seen:
        assert seen.version == f"TLSv{version}"
        head, body = seen.records
        assert head.endswith(b"\r\n\r\n") and head.startswith(b"POST /webhook/pix HTTP/1.1\r\n")
        assert b"\r\nConnection: Keep-Alive\r\n" in head  # as OkHttp asks; the client closes anyway
        assert json.loads(body)["pix"][0]["endToEndId"]
        assert seen.client_closed  # close_notify from the client, not a server close


def test_pipelined_fresh_client_sends_head_and_body_in_one_record(
    pki: Pki, recording: RecordingServer
) -> None:
    """The kind sender stays as it was, so the floors measured with it keep their meaning."""
    result = _loadgen(pki, recording.port, "--fresh")

    assert result["ok"] == 2, result
    for seen in recording.seen:
        assert len(seen.records) == 1 and b"\r\nConnection: close\r\n" in seen.records[0]


def test_psp_client_leaves_nagle_on(pki: Pki) -> None:
    loadgen = _bench_module("loadgen")
    context = ssl.create_default_context(cafile=str(pki.server_ca))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = str(listener.getsockname()[1])
        for psp, nodelay in ((True, 0), (False, 1)):
            args = loadgen.parser().parse_args(["--port", port, "--ca", "x", "--cert", "y"] + ["--psp"] * psp)
            client = loadgen._Client(args, context, [])
            conn = client.open()
            try:
                assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == nodelay
            finally:
                client.close(conn)


def _args(run: ModuleType, *argv: str) -> argparse.Namespace:
    sys_argv, sys.argv = sys.argv, ["run.py", *argv]
    try:
        args: argparse.Namespace = run.parse_args()
    finally:
        sys.argv = sys_argv
    return args


def test_mode_and_logging_pick_the_targets_and_rows() -> None:
    run = _bench_module("run")
    names = [name for name, _ in run.starters(_args(run), Path("/nonexistent"), None)]

    quick = _args(run, "--mode", "psp", "--logging", "on")
    assert [name for name in names if run.wanted(quick, name)] == [
        run.RECEIVER_LOGGED,
        run.NGINX_LOGGED,
        run.NGINX_BODY_LOGGED,
    ]
    assert [w.label for w in run.workloads(quick, run.RECEIVER_LOGGED)] == [
        "PSP client, TLS 1.2",
        "PSP client, TLS 1.3",
    ]

    before = _args(
        run, "--mode", "pipelined", "--logging", "off"
    )  # what a run measured before: the floors' rows
    assert [name for name in names if run.wanted(before, name)] == names[:6]
    assert not any(w.psp for name in names for w in run.workloads(before, name))

    everything = _args(run)
    assert all(run.wanted(everything, name) for name in names)
    assert [w.label for w in run.workloads(everything, run.NGINX_BODY)] == [
        "PSP client, TLS 1.2",
        "PSP client, TLS 1.3",
    ]
    assert [w.label for w in run.workloads(everything, run.NGINX_200)] == [
        "fresh connection",
        "keep-alive",
        "fresh connection, TLS 1.2",
        "PSP client, TLS 1.2",
        "PSP client, TLS 1.3",
    ]
    # the floors' table holds today's rows only
    assert run.in_floors_table(everything, run.NGINX_200, "fresh connection")
    assert not run.in_floors_table(everything, run.NGINX_200, "fresh connection, TLS 1.2")
    assert not run.in_floors_table(everything, run.NGINX_LOGGED, "fresh connection")


def test_report_keeps_the_notes_below_its_marker(tmp_path: Path) -> None:
    run = _bench_module("run")
    report = tmp_path / "BENCHMARKS.md"
    assert run.kept_notes(report) == []
    report.write_text(f"# old table\n\n{run.NOTES_MARKER}\n\n## Full runs\n\n| a |\n", encoding="utf-8")
    assert run.kept_notes(report) == ["## Full runs", "", "| a |"]
    report.write_text("# a report written before the marker existed\n", encoding="utf-8")
    assert run.kept_notes(report) == []


def test_receiver_python_names_the_checkout_or_fails_in_one_line(tmp_path: Path) -> None:
    """Run from this checkout, an interpreter without mtls-receiver must not import the checkout's."""
    run = _bench_module("run")
    bare = tmp_path / "python-without-site-packages"
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n', encoding="utf-8")
    bare.chmod(0o755)
    with pytest.raises(SystemExit, match=r"^--receiver-python .*: cannot import mtls_receiver \(.*\)$"):
        run.receiver_version(str(bare))
    with pytest.raises(SystemExit, match=r"^--receiver-python /nonexistent/python: "):
        run.receiver_version("/nonexistent/python")
    checkout = str(BENCH.parent)
    assert run.receiver_version(sys.executable).startswith(f"{metadata.version('mtls-receiver')} ({checkout}")


def test_verifiers_bench_verifies_every_providers_sample(tmp_path: Path) -> None:
    """Tiny counts: every registered sender has a route whose own sample its verifier accepts."""
    command = [
        sys.executable,
        str(BENCH / "verifiers.py"),
        "--iterations",
        "5",
        "--repeat",
        "1",
        "--no-write",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    labels = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")]
    for name in PROVIDER_NAMES:
        assert any(label == name or label.startswith(f"{name} (") for label in labels), name
    assert "The signature check alone" in result.stdout
    assert not (tmp_path / "BENCHMARKS.md").exists()


def test_verifiers_report_replaces_only_its_own_section(tmp_path: Path) -> None:
    verifiers = _bench_module("verifiers")
    report = tmp_path / "BENCHMARKS.md"
    kept = "# Benchmarks\n\n| a |\n\n<!-- marker -->\n\n## notes\n"
    report.write_text(kept, encoding="utf-8")
    verifiers.write_report(report, [verifiers.BEGIN, "first", verifiers.END])
    verifiers.write_report(report, [verifiers.BEGIN, "second", verifiers.END])
    text = report.read_text(encoding="utf-8")
    assert text == kept + f"\n{verifiers.BEGIN}\nsecond\n{verifiers.END}\n"
