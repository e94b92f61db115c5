"""HMAC-SHA256 request signatures, described as data: which header, which bytes, which encoding.

Providers with a fixed scheme are presets of :class:`SignatureScheme`; the ``hmac`` provider
lets a route describe any other sender the same way. Pure functions only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from .errors import Refusal
from .events import IncomingRequest

__all__ = [
    "SIGNED_PARTS",
    "SignatureScheme",
    "check_timestamp",
    "decode_secret",
    "hmac_sha256",
    "matches_any",
    "standard_webhook_signature",
    "verify_signature",
]

SIGNED_PARTS = ("timestamp", "body", "path")


@dataclass(frozen=True)
class SignatureScheme:
    header: str
    prefix: str = ""
    encoding: str = "hex"  # or "base64"
    secret_encoding: str = "utf-8"  # or "base64"
    signed: tuple[str, ...] = ("body",)  # parts of SIGNED_PARTS, joined by separator
    separator: str = ""
    timestamp_header: str | None = None
    timestamp_required: bool = False
    tolerance: int = 300  # seconds, both directions


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def decode_secret(secret: str, encoding: str) -> bytes:
    """The HMAC key bytes; raises ValueError for a base64 secret that does not decode."""
    if encoding == "base64":
        return base64.b64decode(secret, validate=True)
    return secret.encode("utf-8")


def check_timestamp(value: str | None, now: float, tolerance: int, required: bool, header: str) -> None:
    """Unix seconds within ``tolerance`` of ``now``, in both directions."""
    if value is None:
        if required:
            raise Refusal(401, f"signature: {header} header missing")
        return
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise Refusal(401, f"signature: {header} is not unix seconds")
    skew = now - int(value)
    if abs(skew) > tolerance:
        direction = "old" if skew > 0 else "in the future"
        raise Refusal(401, f"signature: timestamp {abs(skew):.0f}s {direction} (tolerance {tolerance}s)")


def verify_signature(scheme: SignatureScheme, keys: tuple[bytes, ...], request: IncomingRequest) -> None:
    """Refusal(401) unless the request's signature header matches one of ``keys`` (rotation)."""
    timestamp = request.header(scheme.timestamp_header) if scheme.timestamp_header else None
    if scheme.timestamp_header:
        check_timestamp(
            timestamp, request.now, scheme.tolerance, scheme.timestamp_required, scheme.timestamp_header
        )
    presented = _presented_digest(scheme, request.header(scheme.header))
    message = scheme.separator.encode().join(_part(name, timestamp, request) for name in scheme.signed)
    if not matches_any(presented, message, keys):
        raise Refusal(401, f"signature: {scheme.header} does not match")


def matches_any(presented: bytes, message: bytes, keys: tuple[bytes, ...]) -> bool:
    """Constant-time comparison against every key, without stopping at the first match."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, hmac_sha256(key, message))
    return matched


def _presented_digest(scheme: SignatureScheme, value: str | None) -> bytes:
    if value is None:
        raise Refusal(401, f"signature: {scheme.header} header missing")
    if not value.startswith(scheme.prefix):
        raise Refusal(401, f"signature: {scheme.header} must start with {scheme.prefix!r}")
    encoded = value[len(scheme.prefix) :].strip()
    try:
        digest = (
            bytes.fromhex(encoded) if scheme.encoding == "hex" else base64.b64decode(encoded, validate=True)
        )
    except (ValueError, binascii.Error):
        raise Refusal(401, f"signature: {scheme.header} is not {scheme.encoding}") from None
    if len(digest) != hashlib.sha256().digest_size:
        raise Refusal(401, f"signature: {scheme.header} is not an HMAC-SHA256 digest")
    return digest


def _part(name: str, timestamp: str | None, request: IncomingRequest) -> bytes:
    if name == "timestamp":
        return (timestamp or "").encode()
    if name == "path":
        return request.path_qs.encode()
    return request.body


def standard_webhook_signature(secrets: tuple[str, ...], msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature`` of the Standard Webhooks spec: ``v1,<base64>`` per secret, space-separated
    (several while rotating), each over ``{id}.{timestamp}.{body}`` keyed by the base64 after ``whsec_``."""
    message = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1,"
        + base64.b64encode(
            hmac_sha256(decode_secret(secret.removeprefix("whsec_"), "base64"), message)
        ).decode()
        for secret in secrets
    )
