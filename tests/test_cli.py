"""The command line as a user runs it: dev-certs, serve, probe, events list, serve --dev, certs."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from support import PYTHON, Pki, Serve, ServerProcess, config_text, run_cli, wait_until

from mtls_receiver.errors import ReceiverError
from mtls_receiver.providers.efi.certs import fetch_efi_chain


@pytest.fixture
def dev_server(tmp_path: Path, serve: Serve) -> tuple[Path, int, ServerProcess]:
    made = run_cli("dev-certs", str(tmp_path / "dev"), "--port", "0")
    assert made.returncode == 0, made.stderr
    for name in (
        "server-ca.pem",
        "server.pem",
        "server.key",
        "client-ca.pem",
        "client.pem",
        "foreign-client.pem",
    ):
        assert (tmp_path / "dev" / name).is_file(), name
    assert (tmp_path / "dev" / "server.key").stat().st_mode & 0o077 == 0
    server, port = serve(tmp_path / "dev" / "config.toml")
    return tmp_path / "dev", port, server


def test_probe_passes_against_dev_server_and_event_is_listed(dev_server) -> None:  # type: ignore[no-untyped-def]
    directory, port, server = dev_server
    probed = run_cli(
        "probe",
        f"https://localhost:{port}/webhook",
        "--ca",
        str(directory / "server-ca.pem"),
        "--cert",
        str(directory / "client.pem"),
    )
    assert probed.returncode == 0, probed.stdout + probed.stderr
    assert [line.split()[0] for line in probed.stdout.splitlines()] == ["PASS", "PASS", "PASS"]

    listed = run_cli("events", "list", "--config", str(directory / "config.toml"), "--json")
    (event,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert event["kind"] == "pix" and "PROBE" in event["dedup_key"]
    assert "efi-like dev client" in event["client_subject"]
    assert re.fullmatch(r"[0-9a-f]{64}", event["client_fingerprint"])
    text = run_cli("events", "list", "--config", str(directory / "config.toml"))
    assert event["id"] in text.stdout

    assert server.terminate() == 0  # SIGTERM stops it cleanly
    log = "".join(server.output)
    assert (
        "accepted listener=dev route=/webhook method=POST path=/webhook/pix status=200 kind=pix stored=1"
        in log
    )
    assert (
        'refused listener=dev step="TLS handshake" peer=127.0.0.1 reason=PEER_DID_NOT_RETURN_A_CERTIFICATE'
        in log
    )
    assert "refused route=" not in log  # the no-certificate probe never reached HTTP


def test_probe_with_query_url_appends_suffix_to_the_string(dev_server) -> None:  # type: ignore[no-untyped-def]
    directory, port, _ = dev_server
    probed = run_cli(
        "probe",
        f"https://localhost:{port}/webhook?ignorar=",
        "--ca",
        str(directory / "server-ca.pem"),
        "--cert",
        str(directory / "client.pem"),
    )
    assert probed.returncode == 0, probed.stdout
    assert "webhook?ignorar=/pix -> HTTP 200" in probed.stdout


def test_probe_with_foreign_certificate_fails(dev_server) -> None:  # type: ignore[no-untyped-def]
    directory, port, _ = dev_server
    probed = run_cli(
        "probe",
        f"https://localhost:{port}/webhook",
        "--ca",
        str(directory / "server-ca.pem"),
        "--cert",
        str(directory / "foreign-client.pem"),
    )
    assert probed.returncode == 1
    assert [line.split()[0] for line in probed.stdout.splitlines()] == ["PASS", "FAIL", "FAIL"]


async def test_probe_fails_against_server_without_client_certificates(pki: Pki) -> None:
    """A naive TLS server that answers 200 to everyone: what Efí refuses to register."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _ok)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        proc = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "mtls_receiver",
            "probe",
            f"https://localhost:{port}/webhook",
            "--ca",
            str(pki.server_ca),
            "--cert",
            str(pki.client),
            stdout=subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await runner.cleanup()
    assert proc.returncode == 1
    first = out.decode().splitlines()[0]
    assert first.startswith("FAIL") and "without client certificate" in first and "HTTP 200" in first


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="200")


def test_probe_without_cert_skips_the_certificate_steps(dev_server) -> None:  # type: ignore[no-untyped-def]
    directory, port, _ = dev_server
    probed = run_cli("probe", f"https://localhost:{port}/webhook", "--ca", str(directory / "server-ca.pem"))
    assert probed.returncode == 0
    assert [line.split()[0] for line in probed.stdout.splitlines()] == ["PASS", "SKIP", "SKIP"]


def test_probe_cannot_connect_fails(tmp_path: Path, pki: Pki) -> None:
    probed = run_cli("probe", "https://127.0.0.1:9/webhook", "--ca", str(pki.server_ca), "--timeout", "5")
    assert probed.returncode == 1 and "cannot connect" in probed.stdout


def test_serve_dev_makes_certificates_and_prints_a_working_curl(tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = ServerProcess("serve", "--dev", "--state-dir", str(state), "--port", "0")
    server.start()
    try:
        command = _wait_for_curl(server)
        assert (state / "client.pem").is_file() and (state / "config.toml").is_file()
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed; the printed command was checked for shape only")
        sent = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30)
        assert (sent.returncode, sent.stdout) == (0, "200"), sent.stderr
        listed = run_cli("events", "list", "--config", str(state / "config.toml"), "--json")
        assert len(listed.stdout.splitlines()) == 1
    finally:
        server.kill()


def _wait_for_curl(server: ServerProcess, timeout: float = 20.0) -> str:
    def printed() -> re.Match[str] | None:
        return re.search(r"(curl .*?/webhook/pix)\n", "".join(server.output).replace("\\\n", " "))

    wait_until(printed, timeout, lambda: "no curl command printed:\n" + "".join(server.output))
    match = printed()
    assert match is not None
    return match.group(1)


def test_check_config_and_serve_report_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('[[listeners]]\naddress = "nowhere"\n', encoding="utf-8")
    for command in (("check-config", "--config", str(bad)), ("serve", "--config", str(bad))):
        result = run_cli(*command)
        assert result.returncode == 2
        assert f"{bad}: listeners[0].address: expected 'host:port'" in result.stderr


async def test_fetch_efi_chain_from_a_local_server(tmp_path: Path) -> None:
    web_ca = trustme.CA()
    efi_root = trustme.CA()
    chain = efi_root.cert_pem.bytes() + efi_root.create_child_ca().cert_pem.bytes()

    async def serve_chain(request: web.Request) -> web.Response:
        return web.Response(body=chain)

    async def serve_html(request: web.Request) -> web.Response:
        return web.Response(body=b"<html>maintenance</html>")

    app = web.Application()
    app.router.add_get("/chain.crt", serve_chain)
    app.router.add_get("/html", serve_html)
    runner = web.AppRunner(app)
    await runner.setup()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    web_ca.issue_cert("127.0.0.1").configure_cert(server_context)
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context).start()
    base = f"https://127.0.0.1:{runner.addresses[0][1]}"
    client = ssl.create_default_context()
    web_ca.configure_trust(client)
    try:
        target = await asyncio.to_thread(fetch_efi_chain, tmp_path, True, f"{base}/chain.crt", client)
        assert target.name == "efi-chain-sandbox.crt"
        assert target.read_bytes().count(b"BEGIN CERTIFICATE") == 2
        with pytest.raises(ReceiverError, match="did not return PEM certificates"):
            await asyncio.to_thread(fetch_efi_chain, tmp_path, False, f"{base}/html", client)
        with pytest.raises(ReceiverError, match="cannot download"):
            await asyncio.to_thread(fetch_efi_chain, tmp_path, False, f"{base}/chain.crt")  # untrusted server
    finally:
        await runner.cleanup()
    assert not (tmp_path / "efi-chain-prod.crt").exists()


def test_probe_fails_when_the_server_certificate_is_untrusted(dev_server, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    directory, port, _ = dev_server
    probed = run_cli(
        "probe",
        f"https://localhost:{port}/webhook",
        "--ca",
        str(pki.server_ca),  # another CA
        "--cert",
        str(directory / "client.pem"),
    )
    assert probed.returncode == 1
    first = probed.stdout.splitlines()[0]
    assert first.startswith("FAIL") and "server's own certificate is not trusted" in first


def test_port_in_use_is_reported_with_the_key(tmp_path: Path, pki: Pki) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    config = tmp_path / "config.toml"
    config.write_text(config_text(pki, port=taken.getsockname()[1]), encoding="utf-8")
    try:
        result = run_cli("serve", "--config", str(config))
    finally:
        taken.close()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{config}: listeners[0].address: cannot listen on 127.0.0.1:" in result.stderr
    assert "Address already in use" in result.stderr
