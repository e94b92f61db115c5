"""Symmetric request authentication described as data: HMACs, plain digests, static tokens.

A :class:`SignatureScheme` says where a signature travels (a header, a multi-field header such as
``t=…,v1=…``, a query parameter), how it is written (hex, base64, base64url, a prefix), which
HMAC (SHA-1, SHA-256, SHA-512) and which bytes it covers (a template of parts: literal text, the
body, the timestamp, the path, a query parameter, a header value, optionally lower-cased).
Providers with a fixed scheme are presets of it; the ``hmac`` provider lets a route describe any
other sender the same way. Static tokens (a named header, HTTP Basic, Bearer) and plain digests
(``sha256(secret + separator + body)``) have their own small functions here.

Everything is a pure function. Every comparison of a secret-derived value is constant-time and
runs over every configured secret (rotation) without stopping at the first match.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs

from .errors import Refusal
from .events import IncomingRequest, Peer

__all__ = [
    "ALGORITHMS",
    "CARRIERS",
    "ENCODINGS",
    "SIGNED_PARTS",
    "SignatureScheme",
    "basic_credentials",
    "bearer_token",
    "check_timestamp",
    "decode_digest",
    "decode_secret",
    "encode_digest",
    "field_values",
    "hmac_digest",
    "hmac_sha256",
    "matches_any",
    "matches_any_of",
    "part_problem",
    "plain_digest_matches",
    "query_value",
    "sign_request",
    "signed_message",
    "standard_webhook_signature",
    "token_matches",
    "verify_signature",
]

SIGNED_PARTS = ("timestamp", "body", "path")  # the parts without an argument (see part_problem)
ALGORITHMS = ("sha1", "sha256", "sha512")  # hashlib names
ENCODINGS = ("hex", "base64", "base64url")
CARRIERS = ("header", "fields", "query")


@dataclass(frozen=True)
class SignatureScheme:
    """How one sender signs; the defaults are the common case (HMAC-SHA256, hex, of the body)."""

    header: str  # the header (carrier "header" or "fields") or query parameter (carrier "query")
    prefix: str = ""  # before the encoded digest ("sha256=")
    encoding: str = "hex"  # or "base64", "base64url" (padding optional)
    secret_encoding: str = "utf-8"  # or "base64"
    signed: tuple[str, ...] = ("body",)  # template parts, joined by separator (see part_problem)
    separator: str = ""
    timestamp_header: str | None = None  # the timestamp travels in this header ...
    timestamp_required: bool = False
    tolerance: int = 300  # seconds, both directions
    algorithm: str = "sha256"  # a key of ALGORITHMS
    carrier: str = "header"  # one of CARRIERS
    signature_field: str = "v1"  # carrier "fields": the field(s) holding a signature (several: any)
    timestamp_field: str | None = None  # carrier "fields": ... or in this field ("t", "ts")
    field_separator: str = ","  # carrier "fields": between the fields


# --- digests and their text forms ------------------------------------------------------------------


def hmac_digest(algorithm: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, algorithm).digest()


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac_digest("sha256", key, message)


def decode_secret(secret: str, encoding: str) -> bytes:
    """The HMAC key bytes; raises ValueError for a base64 secret that does not decode."""
    if encoding == "base64":
        return base64.b64decode(secret, validate=True)
    return secret.encode("utf-8")


def encode_digest(digest: bytes, encoding: str) -> str:
    if encoding == "base64":
        return base64.b64encode(digest).decode()
    if encoding == "base64url":
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return digest.hex()


def decode_digest(text: str, encoding: str) -> bytes:
    """The digest bytes of ``text``; ValueError when it is not in ``encoding``."""
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        if encoding == "base64url":
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise ValueError(f"not {encoding}") from None


def matches_any(presented: bytes, message: bytes, keys: tuple[bytes, ...], algorithm: str = "sha256") -> bool:
    """Constant-time comparison against every key, without stopping at the first match."""
    return matches_any_of((presented,), (message,), keys, algorithm)


def matches_any_of(
    presented: Iterable[bytes], messages: Iterable[bytes], keys: tuple[bytes, ...], algorithm: str
) -> bool:
    """True when one presented digest is the HMAC of one message under one key; every
    combination is compared in constant time (several presented: rotation on the sender's side)."""
    expected = [hmac_digest(algorithm, key, message) for message in messages for key in keys]
    matched = False
    for digest in presented:
        for candidate in expected:
            matched |= hmac.compare_digest(digest, candidate)
    return matched


# --- timestamps, fields, query ---------------------------------------------------------------------


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


def field_values(value: str, name: str, separator: str = ",") -> tuple[str, ...]:
    """Every value of field ``name`` in ``k=v<sep>k=v`` (names trimmed and compared case-insensitively)."""
    found = []
    for item in value.split(separator):
        key, equals, text = item.partition("=")
        if equals and key.strip().lower() == name.lower():
            found.append(text.strip())
    return tuple(found)


def query_value(request: IncomingRequest, name: str) -> str | None:
    """The first value of query parameter ``name`` (percent-decoded), or None."""
    values = parse_qs(request.query_string, keep_blank_values=True).get(name)
    return values[0] if values else None


# --- the signed bytes: a template of parts ---------------------------------------------------------


def part_problem(part: str) -> str | None:
    """Why ``part`` is not a valid template part, or None. Parts: ``body``, ``timestamp``,
    ``path`` (path and query as sent), ``literal:TEXT``, ``query:NAME``, ``header:NAME``, and
    ``lower:<part>`` for any of them lower-cased."""
    inner = part.removeprefix("lower:")
    if inner in SIGNED_PARTS:
        return None
    kind, colon, argument = inner.partition(":")
    if not colon or kind not in ("literal", "query", "header"):
        return f"unknown part {part!r} (have: body, timestamp, path, literal:TEXT, query:NAME, header:NAME)"
    if kind != "literal" and not argument:
        return f"{part!r} needs a name after '{kind}:'"
    return None


def _part(name: str, timestamp: str | None, request: IncomingRequest) -> bytes:
    if name.startswith("lower:"):
        return _part(name[len("lower:") :], timestamp, request).lower()
    if name == "timestamp":
        return (timestamp or "").encode()
    if name == "path":
        return request.path_qs.encode()
    if name == "body":
        return request.body
    kind, _, argument = name.partition(":")
    if kind == "literal":
        return argument.encode()
    value = query_value(request, argument) if kind == "query" else request.header(argument)
    return (value or "").encode()


def signed_message(scheme: SignatureScheme, timestamp: str | None, request: IncomingRequest) -> bytes:
    return scheme.separator.encode().join(_part(name, timestamp, request) for name in scheme.signed)


# --- the HMAC scheme -------------------------------------------------------------------------------


def verify_signature(scheme: SignatureScheme, keys: tuple[bytes, ...], request: IncomingRequest) -> None:
    """Refusal(401) unless the request's signature matches one of ``keys`` (rotation)."""
    carried = _carried(scheme, request)
    timestamp = _timestamp(scheme, carried, request)
    presented = _presented_digests(scheme, _signature_texts(scheme, carried))
    if not matches_any_of(presented, (signed_message(scheme, timestamp, request),), keys, scheme.algorithm):
        raise Refusal(401, f"signature: {_where(scheme)} does not match")


def _where(scheme: SignatureScheme) -> str:
    return f"query parameter {scheme.header}" if scheme.carrier == "query" else scheme.header


def _carried(scheme: SignatureScheme, request: IncomingRequest) -> str:
    name = scheme.header
    value = query_value(request, name) if scheme.carrier == "query" else request.header(name)
    if value is None:
        missing = "query parameter missing" if scheme.carrier == "query" else "header missing"
        raise Refusal(401, f"signature: {scheme.header} {missing}")
    return value


def _timestamp(scheme: SignatureScheme, carried: str, request: IncomingRequest) -> str | None:
    if scheme.carrier == "fields" and scheme.timestamp_field:
        values = field_values(carried, scheme.timestamp_field, scheme.field_separator)
        where = f"{scheme.header} field {scheme.timestamp_field!r}"
        if len(values) > 1:
            raise Refusal(401, f"signature: {where} given more than once")
        timestamp = values[0] if values else None
    elif scheme.timestamp_header:
        where, timestamp = scheme.timestamp_header, request.header(scheme.timestamp_header)
    else:
        return None
    check_timestamp(timestamp, request.now, scheme.tolerance, scheme.timestamp_required, where)
    return timestamp


def _signature_texts(scheme: SignatureScheme, carried: str) -> tuple[str, ...]:
    if scheme.carrier != "fields":
        return (carried,)
    texts = field_values(carried, scheme.signature_field, scheme.field_separator)
    if not texts:
        raise Refusal(401, f"signature: {scheme.header} has no {scheme.signature_field!r} field")
    return texts[:8]  # a sender rotating keys sends two or three; more is not a signature


def _presented_digests(scheme: SignatureScheme, texts: tuple[str, ...]) -> tuple[bytes, ...]:
    """The digests of the presented signatures. Of several (a rotation), a malformed one is skipped
    as a sender's SDK would; the request is refused only when none is well-formed."""
    digests: list[bytes] = []
    for index, text in enumerate(texts, start=1):
        try:
            digests.append(_presented_digest(scheme, text))
        except Refusal:
            if not digests and index == len(texts):
                raise
    return tuple(digests)


def _presented_digest(scheme: SignatureScheme, value: str) -> bytes:
    if not value.startswith(scheme.prefix):
        raise Refusal(401, f"signature: {_where(scheme)} must start with {scheme.prefix!r}")
    try:
        digest = decode_digest(value[len(scheme.prefix) :].strip(), scheme.encoding)
    except ValueError:
        raise Refusal(401, f"signature: {_where(scheme)} is not {scheme.encoding}") from None
    if len(digest) != hashlib.new(scheme.algorithm).digest_size:
        raise Refusal(401, f"signature: {_where(scheme)} is not an HMAC-{scheme.algorithm.upper()} digest")
    return digest


def sign_request(
    scheme: SignatureScheme, key: bytes, path: str, headers: dict[str, str], body: bytes, now: float
) -> tuple[str, dict[str, str]]:
    """A request's ``path`` and ``headers`` with the signature (and timestamp) added as ``scheme``
    says: what ``send-test`` sends. ``path`` is the route's full path, with any query."""
    timestamp = str(int(now))
    headers = dict(headers)
    if scheme.timestamp_header and scheme.carrier != "fields":
        headers[scheme.timestamp_header] = timestamp
    bare, _, query = path.partition("?")
    request = IncomingRequest("POST", bare, query, headers, body, Peer("0.0.0.0"), now=now, raw_target=path)
    value = scheme.prefix + encode_digest(
        hmac_digest(scheme.algorithm, key, signed_message(scheme, timestamp, request)), scheme.encoding
    )
    if scheme.carrier == "query":
        return f"{path}{'&' if query else '?'}{scheme.header}={value}", headers
    if scheme.carrier == "fields":
        sep = scheme.field_separator
        stamp = f"{scheme.timestamp_field}={timestamp}{sep}" if scheme.timestamp_field else ""
        value = f"{stamp}{scheme.signature_field}={value}"
    headers[scheme.header] = value
    return path, headers


# --- plain digests and static tokens ---------------------------------------------------------------


def plain_digest_matches(
    presented_hex: str, secrets: tuple[str, ...], separator: bytes, body: bytes, algorithm: str = "sha256"
) -> bool:
    """``hash(secret + separator + body)`` in hex (any case) equals the presented value for one
    secret; all compared in constant time (PagBank's ``x-authenticity-token``)."""
    try:
        presented = bytes.fromhex(presented_hex.strip())
    except ValueError:
        return False
    matched = False
    for secret in secrets:
        expected = hashlib.new(algorithm, secret.encode() + separator + body).digest()
        matched |= hmac.compare_digest(presented, expected)
    return matched


def token_matches(presented: str | None, secrets: tuple[str, ...]) -> bool:
    """A static token equals one of ``secrets``; every secret compared in constant time (as bytes:
    compare_digest refuses non-ASCII str)."""
    if presented is None:
        return False
    given = presented.encode("utf-8", "surrogateescape")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given, secret.encode("utf-8"))
    return matched


def basic_credentials(authorization: str | None) -> str | None:
    """``user:password`` of an ``Authorization: Basic …`` header, or None when it is not one."""
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None when it is not one."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


# --- Standard Webhooks (the forwarder signs its deliveries so) -------------------------------------


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
