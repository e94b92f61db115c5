"""A throwaway PKI on disk, shaped like production: Efí's root + intermediate sign the client."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme

__all__ = ["Pki", "make_pki"]


@dataclass(frozen=True)
class Pki:
    """PEM files on disk, shaped like production: Efí's root + intermediate sign the client."""

    dir: Path
    server_ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path  # Efí-like root + intermediate bundle
    client: Path
    other_client: Path  # same CA as ``client``, another subject (another customer's, another PSP's)
    foreign_client: Path
    expired_client: Path
    future_client: Path
    client_der: bytes


def make_pki(directory: Path) -> Pki:
    """Issue every certificate the tests use and write it under ``directory``."""
    now = datetime.now(UTC)
    server_ca = trustme.CA()
    server = server_ca.issue_cert("localhost", "127.0.0.1")
    root = trustme.CA(organization_name="Efi-like root")
    intermediate = root.create_child_ca()
    client = intermediate.issue_cert(common_name="efi-like client", organization_name="Efi-like")
    other = intermediate.issue_cert(
        "webhook.other-like.com.br", common_name="webhook.other-like.com.br", organization_name="Other-like"
    )
    expired = intermediate.issue_cert(
        common_name="expired client", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    future = intermediate.issue_cert(
        common_name="future client", not_before=now + timedelta(days=1), not_after=now + timedelta(days=30)
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
        other_client=write("other.pem", other.private_key_and_cert_chain_pem.bytes()),
        foreign_client=write("foreign.pem", foreign.private_key_and_cert_chain_pem.bytes()),
        expired_client=write("expired.pem", expired.private_key_and_cert_chain_pem.bytes()),
        future_client=write("future.pem", future.private_key_and_cert_chain_pem.bytes()),
        client_der=ssl.PEM_cert_to_DER_cert(client.cert_chain_pems[0].bytes().decode()),
    )
