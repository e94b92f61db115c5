"""Senders that sign with a private key, as their documents describe it (``cryptography`` directly, never
the code under test), and a stand-in for the URL a sender publishes its public keys at."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

__all__ = [
    "SECP256K1_ORDER",
    "KeyStandIn",
    "b64",
    "b64url",
    "ecdsa_key",
    "ed25519_key",
    "high_s",
    "jwk",
    "key_stand_in",
    "kiwify_sign",
    "pem",
    "private_pem",
    "rsa_key",
    "sign_ecdsa",
    "sign_rsa",
    "write_private_key",
]

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def ecdsa_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256K1())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The public half as a ``BEGIN PUBLIC KEY`` PEM."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8, as ``dev-certs`` writes the dev signing keys."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private_key(
    path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
) -> Path:
    path.write_bytes(private_pem(key))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    """base64url without padding (Kiwify, JOSE)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_ecdsa(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """Stark Bank: ECDSA secp256k1 over SHA-256 of the message, DER."""
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def high_s(der: bytes) -> bytes:
    """The same signature with s replaced by n - s: equally valid ECDSA, the "high-S" form."""
    r, s = decode_dss_signature(der)
    s = s if s > SECP256K1_ORDER // 2 else SECP256K1_ORDER - s
    return encode_dss_signature(r, s)


def sign_rsa(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """Woovi, Pagar.me v5: RSASSA-PKCS1-v1_5 with SHA-256."""
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def kiwify_sign(key: ed25519.Ed25519PrivateKey, path: str, body: bytes, timestamp: str) -> str:
    """Kiwify banking: SHA-256 of ``{url_path}:POST:{raw_body}:{timestamp}``, that digest signed with
    Ed25519, base64url without padding."""
    digest = hashlib.sha256(f"{path}:POST:".encode() + body + f":{timestamp}".encode()).digest()
    return b64url(key.sign(digest))


def jwk(key: rsa.RSAPrivateKey, kid: str, **extra: str) -> dict[str, str]:
    """An RSA public key as a JWK (RFC 7517/7518: n and e, big-endian, base64url)."""
    numbers = key.public_key().public_numbers()

    def encoded(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": encoded(numbers.n),
        "e": encoded(numbers.e),
        **extra,
    }


@dataclass
class KeyStandIn:
    """The sender's key URL on loopback: serves ``document``, counts its hits; ``status`` other than
    200 answers that; ``delay`` seconds before answering (a fetch that times out)."""

    url: str = ""
    document: str = ""
    status: int = 200
    delay: float = 0.0
    hits: int = 0
    headers_seen: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.headers_seen.append(dict(request.headers))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        return web.Response(text=self.document, content_type="application/json")


@asynccontextmanager
async def key_stand_in(document: str = "", path: str = "/keys") -> AsyncIterator[KeyStandIn]:
    standin = KeyStandIn(document=document)
    app = web.Application()
    app.router.add_get(path, standin.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    standin.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield standin
    finally:
        await runner.cleanup()
