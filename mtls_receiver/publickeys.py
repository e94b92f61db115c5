"""Public keys and asymmetric signatures: key documents parsed, signatures checked. Pure functions only.

A sender that signs with a private key publishes its public half: as a PEM, in a key list (Stark Bank's
``{"publicKeys":[{"content": PEM}]}``, Woovi's ``{"public_keys":[{"key": PEM, ...}]}``, Kiwify's
``is_active`` list) or as a JWKS (Pagar.me v5). Every listed key is kept, so a signature made with
either key of a rotation verifies. Fetching and caching those documents is :mod:`.keysource`'s job.

Algorithms (the names routes use):

- ``ecdsa-secp256k1-sha256``: ECDSA on secp256k1 over SHA-256, DER signature. High-S signatures are
  accepted (Stark Bank's signer emitted them until 2026; OpenSSL's verify does not require low-S).
- ``rsa-pkcs1v15-sha256``: RSASSA-PKCS1-v1_5 with SHA-256 (``SHA256withRSA``, JOSE ``RS256``).
- ``ed25519``: pure Ed25519 over the message.
- ``ed25519-sha256``: pure Ed25519 whose message is the 32-byte SHA-256 digest of the signed bytes
  (Kiwify banking's "prehashed mode"). This is NOT RFC 8032 Ed25519ph (which adds a domain prefix):
  Kiwify's text says SHA-256 first, then Ed25519, and "prehashed" differs from Ed25519ph's SHA-512;
  the reading here is the digest as the Ed25519 message. Unconfirmed by a published vector.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from .signatures import decode_digest

__all__ = [
    "ALGORITHMS",
    "KEY_FORMATS",
    "SIGNATURE_ENCODINGS",
    "KeyDocumentError",
    "NamedKey",
    "PrivateKey",
    "PublicKey",
    "decode_signature",
    "key_id",
    "load_private_key",
    "parse_key_document",
    "parse_pem_keys",
    "public_half",
    "sign",
    "suits",
    "verify",
    "verify_any",
]

PublicKey: TypeAlias = "ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey"
PrivateKey: TypeAlias = "ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey"

ALGORITHMS = ("ecdsa-secp256k1-sha256", "rsa-pkcs1v15-sha256", "ed25519", "ed25519-sha256")
KEY_FORMATS = ("pem", "list", "jwks")  # a PEM (one or more keys), a JSON key list, a JWKS
SIGNATURE_ENCODINGS = ("base64", "base64url", "hex")

_PEM_BEGIN = "-----BEGIN PUBLIC KEY-----"
_PEM_END = "-----END PUBLIC KEY-----"
_LIST_FIELDS = ("publicKeys", "public_keys", "keys", "data", "items")  # where a key list is inside an object
_KEY_FIELDS = ("content", "key", "public_key", "publicKey", "pem")
_ID_FIELDS = ("kid", "key_identifier", "id")


class KeyDocumentError(ValueError):
    """A key document (file or fetched) holds no usable key; the message says why."""


@dataclass(frozen=True)
class NamedKey:
    """One trusted public key and the identifier its document gives it (``kid``), if any."""

    key: PublicKey
    kid: str | None = None
    origin: str = ""  # where it came from, for messages: a file, a URL, "dev signing key"

    def __reduce__(self) -> tuple[object, tuple[bytes, str | None, str]]:
        """Pickled as DER: a supervisor hands its workers the configuration pickled, and
        ``cryptography``'s key objects do not pickle."""
        der = self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return _unpickle_key, (der, self.kid, self.origin)


def _unpickle_key(der: bytes, kid: str | None, origin: str) -> NamedKey:
    key = serialization.load_der_public_key(der)
    assert isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey))
    return NamedKey(key, kid, origin)


def suits(algorithm: str, key: object) -> bool:
    """Whether ``key`` can check signatures of ``algorithm`` (an RSA key never verifies ECDSA)."""
    if algorithm == "ecdsa-secp256k1-sha256":
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256K1)
    if algorithm == "rsa-pkcs1v15-sha256":
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= 1024  # Woovi's prod key is 1024
    return isinstance(key, ed25519.Ed25519PublicKey)


def verify(algorithm: str, key: PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` over ``message`` was made by ``key``'s private half."""
    try:
        if algorithm == "ecdsa-secp256k1-sha256" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))  # DER; high-S accepted
        elif algorithm == "rsa-pkcs1v15-sha256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif algorithm == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif algorithm == "ed25519-sha256" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, hashlib.sha256(message).digest())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_any(
    algorithm: str, keys: Iterable[NamedKey], signature: bytes, messages: Iterable[bytes]
) -> NamedKey | None:
    """The key that signed one of ``messages`` (rotation: every trusted key is tried), or None."""
    candidates = tuple(messages)
    for named in keys:
        if any(verify(algorithm, named.key, signature, message) for message in candidates):
            return named
    return None


def sign(algorithm: str, key: PrivateKey, message: bytes) -> bytes:
    """A signature as the sender makes it: for local dev keys (``send-test``), never a provider's key."""
    if algorithm == "ecdsa-secp256k1-sha256" and isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if algorithm == "rsa-pkcs1v15-sha256" and isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if algorithm in ("ed25519", "ed25519-sha256") and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(hashlib.sha256(message).digest() if algorithm == "ed25519-sha256" else message)
    raise KeyDocumentError(f"the private key is not a key for {algorithm}")


def decode_signature(value: str, encoding: str) -> bytes | None:
    """The signature bytes a header carries; None when they do not decode (the caller refuses)."""
    try:
        return decode_digest(value.strip(), encoding)
    except ValueError:
        return None


def key_id(key: PublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex: how Woovi names its keys (``key_identifier``)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def load_private_key(pem: bytes) -> PrivateKey:
    """An unencrypted PEM private key (PKCS#8 or traditional); KeyDocumentError otherwise."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyDocumentError(f"not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise KeyDocumentError(f"unsupported private key type {type(key).__name__}")
    return key


def public_half(key: PrivateKey) -> PublicKey:
    return key.public_key()


def parse_key_document(document: bytes, key_format: str, origin: str) -> tuple[NamedKey, ...]:
    """Every public key ``document`` lists, in the given format; KeyDocumentError if there is none.

    A document that is a PEM is read as one whatever the format (a downloaded key file)."""
    if key_format == "pem" or document.lstrip().startswith(b"-----BEGIN"):
        keys = parse_pem_keys(document.decode("utf-8", "replace"), origin)
    else:
        try:
            parsed = json.loads(document)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
            raise KeyDocumentError("not valid JSON") from None
        keys = _jwks(parsed, origin) if key_format == "jwks" else _key_list(parsed, origin)
    if not keys:
        raise KeyDocumentError(f"no usable public key in the {key_format} document")
    return keys


def parse_pem_keys(text: str, origin: str, kid: str | None = None) -> tuple[NamedKey, ...]:
    """Every ``BEGIN PUBLIC KEY`` block of ``text`` (a file may hold the old and the new key)."""
    keys = []
    for chunk in text.split(_PEM_BEGIN)[1:]:
        body, end, _ = chunk.partition(_PEM_END)
        if not end:
            raise KeyDocumentError("a PEM block has no END PUBLIC KEY line")
        keys.append(NamedKey(_load_pem(f"{_PEM_BEGIN}{body}{_PEM_END}\n"), kid, origin))
    return tuple(keys)


def _load_pem(pem: str) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as exc:
        raise KeyDocumentError(f"not a valid PEM public key ({exc})") from None
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise KeyDocumentError(f"unsupported public key type {type(key).__name__}")
    return key


def _key_list(parsed: Any, origin: str) -> tuple[NamedKey, ...]:
    """A JSON list of keys, bare or inside an object; an item marked ``is_active: false`` is skipped."""
    items = parsed
    if isinstance(parsed, dict):
        items = next((parsed[name] for name in _LIST_FIELDS if isinstance(parsed.get(name), list)), None)
    if not isinstance(items, list):
        raise KeyDocumentError(f"no key list (an array, or one of {', '.join(_LIST_FIELDS)})")
    keys: list[NamedKey] = []
    for item in items:
        try:
            keys.extend(_list_item(item, origin))
        except KeyDocumentError:  # one key of a type not supported here: the others still count
            continue
    return tuple(keys)


def _list_item(item: Any, origin: str) -> tuple[NamedKey, ...]:
    if isinstance(item, str):
        return parse_pem_keys(item, origin)
    if not isinstance(item, dict) or item.get("is_active") is False:
        return ()
    text = next((item[name] for name in _KEY_FIELDS if isinstance(item.get(name), str)), None)
    if text is None:
        return ()
    kid = next((str(item[name]) for name in _ID_FIELDS if item.get(name) is not None), None)
    if _PEM_BEGIN in text:
        return parse_pem_keys(text, origin, kid)
    raw = decode_signature(text, "base64url" if "-" in text or "_" in text else "base64")
    if raw is not None and len(raw) == 32:  # a bare Ed25519 key, as some lists give it
        return (NamedKey(ed25519.Ed25519PublicKey.from_public_bytes(raw), kid, origin),)
    if raw is not None and _PEM_BEGIN.encode() in raw:  # Woovi's SDK constant: base64 of the PEM text
        return parse_pem_keys(raw.decode("ascii", "replace"), origin, kid)
    return ()


def _jwks(parsed: Any, origin: str) -> tuple[NamedKey, ...]:
    """RSA signing keys of a JWKS: ``kty=RSA``, ``use`` absent or ``sig``, ``alg`` absent or ``RS256``."""
    items = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(items, list):
        raise KeyDocumentError('a JWKS is an object with a "keys" array')
    keys = []
    for jwk in items:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") != "RS256":
            continue
        n, e = _b64url_int(jwk.get("n")), _b64url_int(jwk.get("e"))
        if n is None or e is None:
            continue
        try:
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError:
            continue
        kid = jwk.get("kid")
        keys.append(NamedKey(key, str(kid) if kid is not None else None, origin))
    return tuple(keys)


def _b64url_int(value: object) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    raw = decode_signature(value, "base64url")
    return int.from_bytes(raw, "big") if raw else None
