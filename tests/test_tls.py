"""The handshake refusal matrix, with real TLS on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
import warnings
from pathlib import Path

import pytest
import trustme
from support import REFUSED, Pki, client_context, config_text, https_post, pix

from mtls_receiver.config import load_config
from mtls_receiver.lifecycle import Receiver


async def assert_refused(receiver: Receiver, context: ssl.SSLContext) -> None:
    with pytest.raises(REFUSED):
        await https_post(receiver.port(), "/webhook", b"", context)
    assert await receiver.store.list_events() == []


async def test_efi_like_certificate_is_accepted(receiver: Receiver, pki: Pki) -> None:
    answer = await https_post(receiver.port(), "/webhook", b"", client_context(pki, pki.client))
    assert (answer.status, answer.body) == (200, b"200")


@pytest.mark.parametrize("cert", [None, "foreign_client", "expired_client", "future_client"])
async def test_handshake_refused(receiver: Receiver, pki: Pki, cert: str | None) -> None:
    await assert_refused(receiver, client_context(pki, getattr(pki, cert) if cert else None))


def _legacy_client(pki: Pki, cert: Path) -> ssl.SSLContext:
    context = client_context(pki, cert)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _legacy_server_version(
    pki: Pki, client: ssl.SSLContext, cert: tuple[Path, Path] | None = None
) -> str | None:
    """Control: a permissive blocking server proves the client really speaks TLS 1.0/1.1 (or CBC) here."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(*(cert or (pki.server_cert, pki.server_key)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = ssl.TLSVersion.TLSv1
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=lambda: _accept_once(listener, server), daemon=True)
        thread.start()
        with (
            socket.create_connection(listener.getsockname()) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            version, cipher = tls.version(), tls.cipher()
        thread.join(5)
    return f"{version} {cipher[0]}" if cert and cipher else version


def _accept_once(listener: socket.socket, context: ssl.SSLContext) -> None:
    conn, _ = listener.accept()
    with context.wrap_socket(conn, server_side=True):
        pass


async def test_tls_1_0_and_1_1_refused(receiver: Receiver, pki: Pki) -> None:
    client = _legacy_client(pki, pki.client)
    assert _legacy_server_version(pki, client) in ("TLSv1", "TLSv1.1")
    await assert_refused(receiver, client)


async def test_tls_1_3_minimum_refuses_1_2(write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await start_receiver(write_config(min_tls="1.3"))
    client = client_context(pki, pki.client)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    await assert_refused(receiver, client)
    client.maximum_version = ssl.TLSVersion.TLSv1_3
    assert (await https_post(receiver.port(), "/webhook", b"", client)).status == 200


async def test_client_identity_recorded_with_event(receiver: Receiver, pki: Pki) -> None:
    answer = await https_post(
        receiver.port(), "/webhook/pix", {"pix": [pix("E1")]}, client_context(pki, pki.client)
    )
    assert answer.status == 200
    (event,) = await receiver.store.list_events()
    assert event.client is not None
    assert "CN=efi-like client" in event.client.subject
    assert "Efi-like root" not in event.client.issuer  # issued by the intermediate, not the root
    assert event.client.fingerprint == hashlib.sha256(pki.client_der).hexdigest()


async def test_optional_listener_route_refuses_without_certificate(
    write_config, start_receiver, pki: Pki
) -> None:  # type: ignore[no-untyped-def]
    """Like Efí's nginx recipe (verify optional + 403): the handshake passes, the mTLS route does not."""
    receiver = await start_receiver(write_config(client_certs="optional"))
    answer = await https_post(receiver.port(), "/webhook", b"", client_context(pki))
    assert answer.status == 403
    with pytest.raises(REFUSED):  # a certificate from another CA still fails the handshake
        await https_post(receiver.port(), "/webhook", b"", client_context(pki, pki.foreign_client))
    accepted = await https_post(receiver.port(), "/webhook", b"", client_context(pki, pki.client))
    assert accepted.status == 200
    (audit_ok, audit_refused) = await receiver.store.list_audit()
    assert (audit_ok.status, audit_refused.status) == (200, 403)
    assert audit_refused.client is None and audit_ok.client is not None


# --- TLS 1.2: AEAD suites only (Mozilla "intermediate") ---------------------------------------------------

RsaReceiver = tuple[Receiver, Path, tuple[Path, Path]]  # the receiver, the CA to trust, its (cert, key)


@pytest.fixture
async def rsa_receiver(tmp_path: Path, pki: Pki, start_receiver) -> RsaReceiver:  # type: ignore[no-untyped-def]
    """A receiver with an RSA server certificate, like most production ones: ECDHE-RSA suites need it."""
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.RSA)
    (tmp_path / "rsa-ca.pem").write_bytes(ca.cert_pem.bytes())
    (tmp_path / "rsa.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    (tmp_path / "rsa.key").write_bytes(leaf.private_key_pem.bytes())
    cert = (tmp_path / "rsa.pem", tmp_path / "rsa.key")
    text = config_text(pki).replace(str(pki.server_cert), str(cert[0]))
    text = text.replace(str(pki.server_key), str(cert[1]))
    (tmp_path / "config.toml").write_text(text, encoding="utf-8")
    return await start_receiver(load_config(tmp_path / "config.toml")), tmp_path / "rsa-ca.pem", cert


def _client(
    ca: Path,
    client_cert: Path | None,
    ciphers: str | None = None,
    version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    if client_cert is not None:
        context.load_cert_chain(client_cert)
    return context


def _post_and_see(port: int, context: ssl.SSLContext) -> tuple[str | None, str, bytes]:
    """A blocking client: the negotiated version and suite, and the start of the answer to one POST."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(
                b"POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            cipher = tls.cipher()
            return tls.version(), cipher[0] if cipher else "", tls.recv(12)


@pytest.mark.parametrize(
    "suite", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"]
)
async def test_efi_like_tls12_clients_connect(rsa_receiver: RsaReceiver, pki: Pki, suite: str) -> None:
    receiver, ca, _ = rsa_receiver
    seen = await asyncio.to_thread(_post_and_see, receiver.port(), _client(ca, pki.client, suite))
    assert seen == ("TLSv1.2", suite, b"HTTP/1.1 200")


async def test_tls12_ecdsa_and_tls13_still_connect(receiver: Receiver, pki: Pki) -> None:
    seen = await asyncio.to_thread(
        _post_and_see, receiver.port(), _client(pki.server_ca, pki.client, "ECDHE-ECDSA-AES128-GCM-SHA256")
    )
    assert seen == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", b"HTTP/1.1 200")
    seen = await asyncio.to_thread(
        _post_and_see, receiver.port(), _client(pki.server_ca, pki.client, version=ssl.TLSVersion.TLSv1_3)
    )
    assert seen[0] == "TLSv1.3" and seen[2] == b"HTTP/1.1 200"


# the first two: CBC suites Python's defaults still offered (testssl.sh: LUCKY13 "potentially vulnerable")
@pytest.mark.parametrize(
    "suite",
    ["ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384", "ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256"],
)
async def test_tls12_without_aead_or_forward_secrecy_is_refused(
    rsa_receiver: RsaReceiver, pki: Pki, suite: str
) -> None:
    receiver, ca, cert = rsa_receiver
    client = _client(ca, pki.client, suite)
    assert _legacy_server_version(pki, client, cert) == f"TLSv1.2 {suite}"  # the client really offers it
    with pytest.raises(REFUSED):
        await asyncio.to_thread(_post_and_see, receiver.port(), client)
    assert await receiver.store.list_events() == []


async def test_tls12_cbc_refused_with_an_ecdsa_certificate(receiver: Receiver, pki: Pki) -> None:
    client = _client(pki.server_ca, pki.client, "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384")
    assert _legacy_server_version(pki, client, (pki.server_cert, pki.server_key)) is not None
    with pytest.raises(REFUSED):
        await asyncio.to_thread(_post_and_see, receiver.port(), client)
