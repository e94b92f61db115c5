"""Throwaway certificates for a laptop: a server, a PSP-like client chain, a foreign client, and
local test signing keys (what a ``dev_signing_key`` route trusts, so that ``send-test`` can sign as an
asymmetric sender would without the sender's private key).

The client chain mirrors a PSP's real one (a root plus an intermediate with
``pathlen:0``, the client certificate under the intermediate), so the depth
and chain handling tested locally is the one production needs. Its names and
the config's route come from the sender ``serve --dev`` demonstrates (providers/).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from .errors import ReceiverError
from .files import write_private
from .providers import dev_route

__all__ = [
    "DEV_SIGNING_KEYS",
    "DevCerts",
    "dev_config_text",
    "free_port",
    "make_dev_certs",
    "write_dev_signing_keys",
]

#: file name -> how to make the key: one per kind of asymmetric sender signature
DEV_SIGNING_KEYS: dict[str, Callable[[], PrivateKeyTypes]] = {
    "dev-signing-ecdsa-secp256k1.pem": lambda: ec.generate_private_key(ec.SECP256K1()),
    "dev-signing-rsa.pem": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "dev-signing-ed25519.pem": ed25519.Ed25519PrivateKey.generate,
}


@dataclass(frozen=True)
class DevCerts:
    directory: Path
    server_ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client: Path
    foreign_client: Path
    config: Path
    signing_keys: tuple[Path, ...]  # local test signing keys (DEV_SIGNING_KEYS), PKCS#8 PEM


def make_dev_certs(directory: Path, port: int = 8443, force: bool = False) -> DevCerts:
    """Write the PEM files and a ready ``config.toml`` into ``directory``.

    Keys already there are kept unless ``force``: a client certificate handed to a sender, or a
    server key a proxy points at, must not change under them by a repeated command.
    """
    existing = [name for name in _KEY_FILES if (directory / name).exists()]
    if existing and not force:
        raise ReceiverError(
            f"{directory}: already holds {', '.join(existing)}; --force replaces them (or choose another DIR)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    server_ca = trustme.CA(organization_name="mtls-receiver dev server CA")
    server = server_ca.issue_cert("localhost", "127.0.0.1", "::1")
    sender = dev_route().sender
    client_root = trustme.CA(organization_name=f"{sender} dev root CA")
    client_intermediate = client_root.create_child_ca()
    # Each client certificate names itself in subjectAltName too: without a name there, the
    # extension is empty (RFC 5280 requires one) and Java's keytool and HttpClient cannot load it.
    client = client_intermediate.issue_cert(
        f"{sender.lower()}-dev-client.invalid",
        common_name=f"{sender.lower()} dev client",
        organization_name=f"{sender} dev",
    )
    foreign = trustme.CA(organization_name="Foreign dev CA").issue_cert(
        "foreign-dev-client.invalid", common_name="foreign dev client"
    )

    certs = DevCerts(
        directory=directory,
        server_ca=directory / "server-ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_ca=directory / "client-ca.pem",
        client=directory / "client.pem",
        foreign_client=directory / "foreign-client.pem",
        config=directory / "config.toml",
        signing_keys=tuple(directory / name for name in DEV_SIGNING_KEYS),
    )
    server_ca.cert_pem.write_to_path(str(certs.server_ca))
    certs.server_cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    write_private(certs.server_key, server.private_key_pem.bytes())
    certs.client_ca.write_bytes(client_root.cert_pem.bytes() + client_intermediate.cert_pem.bytes())
    write_private(certs.client, client.private_key_and_cert_chain_pem.bytes())
    write_private(certs.foreign_client, foreign.private_key_and_cert_chain_pem.bytes())
    write_dev_signing_keys(directory, replace=True)
    certs.config.write_text(dev_config_text(port), encoding="utf-8")
    return certs


#: the files holding private keys
_KEY_FILES = ("server.key", "client.pem", "foreign-client.pem", *DEV_SIGNING_KEYS)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the kernel's choice), for a dev config's admin address."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def dev_config_text(port: int, admin_port: int | None = None) -> str:
    """The dev config; its admin port is a free one (a second receiver's 9464 would collide), or 0
    (any, chosen at start) when ``port`` is 0."""
    if admin_port is None:
        admin_port = 0 if port == 0 else free_port()
    return _DEV_CONFIG.format(port=port, admin_port=admin_port, routes=dev_route().routes)


def write_dev_signing_keys(directory: Path, replace: bool = False) -> None:
    """The local test signing keys, unencrypted PKCS#8 PEM, 0600; only the missing ones unless ``replace``
    (a dev directory made before they existed gets them at the next ``serve --dev``)."""
    for name, generate in DEV_SIGNING_KEYS.items():
        path = directory / name
        if replace or not path.exists():
            pem = generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            write_private(path, pem)


_DEV_CONFIG = """\
# Made by `mtls-receiver dev-certs`: throwaway certificates for local testing only.
# Paths are relative to this file.

[[listeners]]
name = "dev"
address = "127.0.0.1:{port}"
cert = "server.pem"          # server certificate chain (PEM)
key = "server.key"
client_certs = "required"    # mutual TLS: a client certificate chained to client_ca
client_ca = "client-ca.pem"  # the dev client's root + intermediate

{routes}
# Local test signing keys for senders that sign with a private key: dev-signing-rsa.pem,
# dev-signing-ecdsa-secp256k1.pem, dev-signing-ed25519.pem. On such a route,
#   dev_signing_key = "dev-signing-ed25519.pem"   (the key its sender's algorithm uses)
# makes the route trust that local key too, so `mtls-receiver send-test ROUTE --config FILE` can sign
# as the sender would. For trying things on this machine only: never in production.

[store]
path = "inbox.db"

[admin]
address = "127.0.0.1:{admin_port}"   # /metrics, /healthz, /readyz (plain HTTP, loopback)
"""
