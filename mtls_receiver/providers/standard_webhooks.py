"""Standard Webhooks (and so any Svix-powered sender): ``webhook-id``, ``webhook-timestamp``,
``webhook-signature`` (or the same headers named ``svix-*``).

The signed bytes are ``{id}.{timestamp}.{raw body}``; the signature header is a space-separated
list of ``<version>,<base64>``: ``v1`` is HMAC-SHA256 keyed by the base64 after ``whsec_``,
``v1a`` is Ed25519 (pure) verified with a ``whpk_`` public key. Any entry matching any configured
key accepts (rotation); unknown versions are ignored. The timestamp must be within 5 minutes in
both directions. Dedup: ``webhook-id``, the same on every retry.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, Verdict
from ..signatures import check_timestamp, matches_any_of, standard_webhook_signature
from .base import Provider, RouteContext, SampleRequest
from .common import (
    check_allowlist,
    first_text,
    json_object,
    one_event,
    options_of,
    require_json,
    require_post,
)
from .keyed import dev_key_warnings, dev_public_key, dev_sign

__all__ = ["PROVIDER", "StandardWebhooksOptions", "hmac_key", "public_key_bytes", "verify"]

TOLERANCE = 300
_MAX_ENTRIES = 16  # a signature list longer than this is not a rotation


def hmac_key(secret: str) -> bytes:
    """The v1 HMAC key: the base64 after ``whsec_``; ValueError when it does not decode."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("not 'whsec_' followed by base64") from None


def public_key_bytes(key: str) -> bytes:
    """The 32 bytes of a ``whpk_`` Ed25519 public key; ValueError otherwise."""
    try:
        raw = base64.b64decode(key.removeprefix("whpk_"), validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("not 'whpk_' followed by base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return raw


@dataclass(frozen=True)
class StandardWebhooksOptions(ProviderOptions):
    secrets: tuple[str, ...] = field(default=(), repr=False)  # "whsec_..." for v1 (rotation: several)
    public_keys: tuple[str, ...] = ()  # "whpk_..." for v1a (with the dev signing key's, when one is set)
    dev_signing_key: Path | None = None  # a LOCAL Ed25519 private key the route also trusts (send-test)

    def describe(self) -> str:
        versions = [name for name, keys in (("v1", self.secrets), ("v1a", self.public_keys)) if keys]
        return "signatures " + " and ".join(versions)

    def warnings(self) -> tuple[str, ...]:
        return dev_key_warnings(self.dev_signing_key)


def _secret_problem(secret: str) -> str | None:
    try:
        hmac_key(secret)
    except ValueError as exc:
        return str(exc)
    return None


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> StandardWebhooksOptions:
    secrets = reader.secret_list(raw, route.key, "secrets", check=_secret_problem)
    public_keys = reader.string_list(raw, route.key, "public_keys")
    for i, key in enumerate(public_keys):
        try:
            public_key_bytes(key)
        except ValueError as exc:
            reader.fail(f"{route.key}.public_keys[{i}]", str(exc))
    dev_file = reader.optional_path(raw, route.key, "dev_signing_key", must_exist=True)
    if dev_file is not None:
        dev_key = dev_public_key(reader, f"{route.key}.dev_signing_key", dev_file, "ed25519").key
        raw_key = dev_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        public_keys = (*public_keys, "whpk_" + base64.b64encode(raw_key).decode())
    if not secrets and not public_keys:
        reader.fail(
            f"{route.key}.secrets",
            'the endpoint secret ([{ env = "WEBHOOK_SECRET" }], whsec_...) or public_keys (whpk_...)',
        )
    return StandardWebhooksOptions(secrets=secrets, public_keys=public_keys, dev_signing_key=dev_file)


def _header(request: IncomingRequest, name: str) -> str | None:
    """``webhook-<name>``, or ``svix-<name>`` from a sender that brands its headers."""
    value = request.header(f"webhook-{name}")
    return value if value is not None else request.header(f"svix-{name}")


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, StandardWebhooksOptions)
    require_post(request, "the sender")
    check_allowlist(route, request)
    msg_id, timestamp, signature = (_header(request, name) for name in ("id", "timestamp", "signature"))
    if not msg_id or signature is None:
        raise Refusal(401, "signature: webhook-id or webhook-signature header missing")
    check_timestamp(timestamp, request.now, route.tolerance or TOLERANCE, True, "webhook-timestamp")
    message = f"{msg_id}.{timestamp}.".encode() + request.body
    if not _any_matches(options, signature, message):
        raise Refusal(401, "signature: webhook-signature does not match")
    require_json(request)
    body = json_object(request.body)
    return one_event(
        first_text(body.get("type"), body.get("event_type")) or "event", f"webhook-id:{msg_id}", body
    )


def _any_matches(options: StandardWebhooksOptions, header: str, message: bytes) -> bool:
    entries = [entry.partition(",") for entry in header.split()[:_MAX_ENTRIES]]
    v1 = tuple(_b64(text) for version, _, text in entries if version == "v1")
    v1a = tuple(_b64(text) for version, _, text in entries if version == "v1a")
    keys = tuple(hmac_key(secret) for secret in options.secrets)
    matched = matches_any_of(v1, (message,), keys, "sha256") if keys else False
    for signature in v1a:
        for key in options.public_keys:
            matched |= _ed25519_valid(public_key_bytes(key), signature, message)
    return matched


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return b""  # matches nothing


def _ed25519_valid(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    """Signed ``v1`` with the route's first secret; on a v1a-only route, ``v1a`` with its dev signing key."""
    options = options_of(route, StandardWebhooksOptions)
    msg_id = f"msg_test_{int(now)}"
    body = json.dumps({"type": event or "test.event", "timestamp": int(now), "data": {}}).encode()
    if options.secrets:
        signature = standard_webhook_signature(options.secrets[:1], msg_id, int(now), body)
    else:
        message = f"{msg_id}.{int(now)}.".encode() + body
        signed = dev_sign(route, options.dev_signing_key, "ed25519", message)
        signature = "v1a," + base64.b64encode(signed).decode()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": signature,
    }
    return SampleRequest(path="", headers=headers, body=body)


PROVIDER = Provider(
    name="standard-webhooks",
    modes=("hmac",),
    keys=frozenset({"secrets", "public_keys", "dev_signing_key"}),
    parse_options=parse_options,
    verify=verify,
    sample=sample,
)
