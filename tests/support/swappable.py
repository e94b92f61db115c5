"""Certificate files swapped on disk under a running server, and what a new connection is served."""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path
from typing import cast

import trustme

from .configs import config_text
from .pki import Pki

__all__ = ["Swappable", "blocking_connect", "served_subject", "write_atomically"]


def write_atomically(path: Path, data: bytes) -> None:
    """As certbot and editors do: the server never reads a half-written file."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class Swappable:
    """A config whose server certificate and client CA files can be swapped on disk."""

    def __init__(self, directory: Path, pki: Pki) -> None:
        self.dir = directory
        self.server_ca = trustme.CA()
        self.second_root = trustme.CA(organization_name="Second client CA")
        self.second_client = self.second_root.issue_cert(common_name="second client")
        second_pem = self.second_client.private_key_and_cert_chain_pem.bytes()
        (directory / "second-client.pem").write_bytes(second_pem)
        (directory / "server-ca.pem").write_bytes(self.server_ca.cert_pem.bytes())
        self.efi_chain = pki.client_ca.read_bytes()
        self.install_server_cert("first")
        write_atomically(directory / "clients.pem", self.efi_chain + self.second_root.cert_pem.bytes())
        text = (
            config_text(pki)
            .replace(f'"{pki.server_cert}"', '"server.pem"')
            .replace(f'"{pki.server_key}"', '"server.key"')
            .replace(f'"{pki.client_ca}"', '"clients.pem"')
        )
        (directory / "config.toml").write_text(text, encoding="utf-8")

    def install_server_cert(self, name: str) -> None:
        leaf = self.server_ca.issue_cert("localhost", "127.0.0.1", common_name=name)
        write_atomically(self.dir / "server.key", leaf.private_key_pem.bytes())
        write_atomically(self.dir / "server.pem", b"".join(b.bytes() for b in leaf.cert_chain_pems))

    def remove_second_ca(self) -> None:
        write_atomically(self.dir / "clients.pem", self.efi_chain)

    def context(self, client: Path | None, tls12: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.dir / "server-ca.pem"))
        if client is not None:
            context.load_cert_chain(client)
        if tls12:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        return context


def blocking_connect(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost", session=session)


def served_subject(port: int, context: ssl.SSLContext) -> str:
    """The common name of the certificate a new connection is served."""
    with blocking_connect(port, context) as tls:
        peer = tls.getpeercert()
        assert peer is not None
        subject = cast("tuple[tuple[tuple[str, str], ...], ...]", peer["subject"])
        return dict(item[0] for item in subject)["commonName"]
