"""Registering webhooks through Efí's API, against a local stand-in that probes the URL as Efí does."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from support import PYTHON, Pki
from support.efi_standin import ERRORS, EfiStandIn

from mtls_receiver.lifecycle import Receiver

CLIENT_ID, CLIENT_SECRET, P12_PASSWORD = "Client_Id_test", "Client_Secret_test_0123", "p12-password"


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The API's server CA, and the account certificate as Efí issues it (.p12, with a password)."""
    directory = tmp_path_factory.mktemp("efi-account")
    api_ca, account_ca = trustme.CA(), trustme.CA(organization_name="Efi account CA")
    leaf = account_ca.issue_cert(common_name="Client_Id_test")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    for name, password in (("account.p12", P12_PASSWORD.encode()), ("open.p12", None)):
        encryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        (directory / name).write_bytes(
            pkcs12.serialize_key_and_certificates(b"acct", key, cert, None, encryption)
        )
    api_ca.cert_pem.write_to_path(str(directory / "api-ca.pem"))
    server = api_ca.issue_cert("localhost")
    server.private_key_and_cert_chain_pem.write_to_path(str(directory / "api-server.pem"))
    account_ca.cert_pem.write_to_path(str(directory / "account-ca.pem"))
    (directory / "secret").write_text(CLIENT_SECRET + "\n")
    (directory / "p12-password").write_text(P12_PASSWORD + "\n")
    return {
        name: directory / name
        for name in (
            "account.p12",
            "open.p12",
            "api-ca.pem",
            "api-server.pem",
            "account-ca.pem",
            "secret",
            "p12-password",
        )
    }


@pytest.fixture
async def efi(account: dict[str, Path], pki: Pki) -> AsyncIterator[EfiStandIn]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(account["api-server.pem"])
    context.verify_mode = ssl.CERT_REQUIRED  # Efí's API is mTLS too: the account certificate
    context.load_verify_locations(account["account-ca.pem"])
    standin = EfiStandIn(
        CLIENT_ID, CLIENT_SECRET, context, receiver_ca=pki.server_ca, webhook_client=pki.client
    )
    await standin.start()
    yield standin
    await standin.stop()


async def cli(
    efi: EfiStandIn, account: dict[str, Path], *args: str, secret_file: str = "secret"
) -> tuple[int, str]:
    """``mtls-receiver efi webhook ...`` as a user runs it; secrets come from files, never argv."""
    command = [
        PYTHON,
        "-m",
        "mtls_receiver",
        "efi",
        "webhook",
        *args,
        "--api-url",
        efi.url,
        "--api-ca",
        str(account["api-ca.pem"]),
        "--client-id",
        CLIENT_ID,
        "--client-secret-file",
        str(account[secret_file]),
        "--cert",
        str(account["account.p12"]),
        "--cert-password-file",
        str(account["p12-password"]),
    ]
    proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, out.decode()


async def test_register_a_running_receiver_and_manage_it(
    efi: EfiStandIn, account: dict[str, Path], pki: Pki, receiver: Receiver
) -> None:
    url = f"https://localhost:{receiver.port()}/webhook?ignorar="
    code, out = await cli(efi, account, "set", "chave-1", url, "--probe-ca", str(pki.server_ca))
    assert code == 0, out
    assert "precheck: PASS" in out and "registered:" in out
    assert efi.probes == ["without certificate", "test notification"]
    assert [a.status for a in await receiver.store.list_audit()][-1] == 200  # the test notification
    code, out = await cli(efi, account, "get", "chave-1")
    assert code == 0 and json.loads(out)["webhookUrl"] == url
    for chave in ("chave-2", "chave-3"):
        assert (await cli(efi, account, "set", chave, url, "--no-precheck"))[0] == 0
    code, out = await cli(
        efi, account, "list", "--inicio", "2026-01-01T00:00:00Z", "--fim", "2027-01-01T00:00:00Z"
    )
    assert code == 0 and sorted(json.loads(line)["chave"] for line in out.splitlines()) == [
        "chave-1",
        "chave-2",
        "chave-3",
    ]
    code, out = await cli(efi, account, "resend", "--tipo", "PIX_RECEBIDO", "E1", "E2")
    assert code == 0 and efi.resends == [{"tipo": "PIX_RECEBIDO", "e2eids": ["E1", "E2"]}]
    assert (await cli(efi, account, "delete", "chave-1"))[0] == 0
    code, out = await cli(efi, account, "get", "chave-1")
    assert code != 0 and "HTTP 404" in out and "Webhook não encontrado" in out


async def test_server_without_mtls_gets_efis_error(
    efi: EfiStandIn, account: dict[str, Path], pki: Pki
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="200")

    app = web.Application()
    app.router.add_post("/{tail:.*}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)  # no client certificates asked
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    url = f"https://localhost:{runner.addresses[0][1]}/webhook"
    try:
        code, out = await cli(efi, account, "set", "chave-1", url, "--probe-ca", str(pki.server_ca))
        assert code == 1 and "precheck: FAIL" in out and "Efí will refuse this registration" in out
        assert efi.probes == []  # the precheck stopped it before Efí was asked
        code, out = await cli(efi, account, "set", "chave-1", url, "--no-precheck")
        assert code != 0 and "HTTP 400" in out and ERRORS["mtls"] in out
        code, out = await cli(efi, account, "set", "chave-1", url + "?hmac=abc&ignorar=", "--skip-mtls")
        assert code == 0, out  # with skip-mTLS Efí does not probe for a refusal
    finally:
        await runner.cleanup()


async def test_base_path_that_404s_gets_efis_error(
    efi: EfiStandIn, account: dict[str, Path], pki: Pki, receiver: Receiver
) -> None:
    url = f"https://localhost:{receiver.port()}/not-the-route"
    code, out = await cli(efi, account, "set", "chave-1", url, "--no-precheck")
    assert code != 0 and ERRORS["status"].format(status=404) in out and "HTTP 400" in out
    assert "chave-1" not in efi.webhooks


async def test_wrong_client_secret_is_reported(
    efi: EfiStandIn, account: dict[str, Path], tmp_path: Path
) -> None:
    account = {**account, "wrong": tmp_path / "wrong"}
    account["wrong"].write_text("not-the-secret")
    code, out = await cli(efi, account, "get", "chave-1", secret_file="wrong")
    assert code != 0 and "HTTP 401" in out and "invalid_client" in out
    assert "not-the-secret" not in out and CLIENT_SECRET not in out


@pytest.mark.parametrize(("source", "password"), [("account.p12", P12_PASSWORD), ("open.p12", None)])
def test_convert_p12(account: dict[str, Path], tmp_path: Path, source: str, password: str | None) -> None:
    target = tmp_path / "account.pem"
    args = [PYTHON, "-m", "mtls_receiver", "efi", "convert-p12", str(account[source]), str(target)]
    env = {**os.environ, "EFI_CERT_PASSWORD": password} if password else None
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert target.stat().st_mode & 0o777 == 0o600
    pem = target.read_bytes()
    assert b"PRIVATE KEY" in pem and b"BEGIN CERTIFICATE" in pem
    ssl.create_default_context().load_cert_chain(target)  # a usable key + certificate pair
    if password:
        wrong = subprocess.run(
            args[:-1] + [str(tmp_path / "x.pem")], capture_output=True, text=True, timeout=60
        )
        assert wrong.returncode != 0 and "wrong password" in wrong.stderr and "Traceback" not in wrong.stderr
