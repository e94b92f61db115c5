"""The handshake refusal matrix, with real TLS on loopback."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import warnings
from pathlib import Path

import pytest

from conftest import REFUSED, Pki, client_context, https_post, pix
from mtls_receiver.server import Receiver


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


def _legacy_server_version(pki: Pki, client: ssl.SSLContext) -> str | None:
    """Control: a permissive blocking server proves the client really speaks TLS 1.0/1.1 here."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.server_cert, pki.server_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = ssl.TLSVersion.TLSv1
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=lambda: _accept_once(listener, server), daemon=True)
        thread.start()
        with socket.create_connection(listener.getsockname()) as raw, client.wrap_socket(raw, server_hostname="localhost") as tls:
            version = tls.version()
        thread.join(5)
    return version


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
    answer = await https_post(receiver.port(), "/webhook/pix", {"pix": [pix("E1")]}, client_context(pki, pki.client))
    assert answer.status == 200
    (event,) = await receiver.store.list_events()
    assert event.client is not None
    assert "CN=efi-like client" in event.client.subject
    assert "Efi-like root" not in event.client.issuer  # issued by the intermediate, not the root
    assert event.client.fingerprint == hashlib.sha256(pki.client_der).hexdigest()


async def test_optional_listener_route_refuses_without_certificate(write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
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
