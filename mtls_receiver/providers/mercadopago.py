"""Mercado Pago: ``x-signature: ts=<s>,v1=<hex>`` over a manifest, not over the body.

The manifest is ``id:{data.id};request-id:{x-request-id};ts:{ts};`` where ``data.id`` is the
query parameter and ``x-request-id`` the header; a pair whose value is missing is left out (the
SDKs' ``buildManifest``). HMAC-SHA256, key = the application's secret signature as UTF-8, hex.
``data.id`` is tried verbatim first (Mercado Pago signs the original casing, SDK fix 2026-06)
and, for an alphanumeric id, lower-cased as well (what the SDKs did before; still reported).
``ts`` is unix seconds; it is checked only when the route sets ``tolerance`` (none is mandated).
Dedup: the notification ``id``, else (type, data.id, action).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, Verdict
from ..signatures import (
    check_timestamp,
    decode_digest,
    encode_digest,
    field_values,
    hmac_digest,
    matches_any_of,
    query_value,
)
from .base import Provider, RouteContext, SampleRequest
from .common import (
    check_allowlist,
    first_text,
    json_object,
    one_event,
    options_of,
    require_json,
    require_post,
    signing_secrets,
)

__all__ = ["PROVIDER", "MercadoPagoOptions", "manifest", "verify"]

HEADER = "x-signature"


@dataclass(frozen=True)
class MercadoPagoOptions(ProviderOptions):
    secrets: tuple[str, ...] = field(default=(), repr=False)  # secret signatures (several: rotation)


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> MercadoPagoOptions:
    return MercadoPagoOptions(secrets=signing_secrets(reader, raw, route.key))


def manifest(data_id: str | None, request_id: str | None, ts: str) -> bytes:
    """The signed bytes; a pair whose value is missing or empty is left out, ``ts`` never."""
    pairs = (("id", data_id), ("request-id", request_id), ("ts", ts))
    return "".join(f"{name}:{value};" for name, value in pairs if value).encode()


def _manifests(data_id: str | None, request_id: str | None, ts: str) -> tuple[bytes, ...]:
    verbatim = manifest(data_id, request_id, ts)
    if data_id and data_id.isascii() and data_id.isalnum() and data_id.lower() != data_id:
        return verbatim, manifest(data_id.lower(), request_id, ts)
    return (verbatim,)


def _presented(value: str) -> tuple[str, tuple[bytes, ...]]:
    """(ts, the v1 digests) of an ``x-signature`` value; Refusal(401) when it is not one."""
    stamps, texts = field_values(value, "ts"), field_values(value, "v1")[:8]
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()) or len(stamps[0]) > 13:
        raise Refusal(401, "signature: x-signature has no single numeric 'ts' field")
    if not texts:
        raise Refusal(401, "signature: x-signature has no 'v1' field")
    digests = []
    for text in texts:
        try:
            digests.append(decode_digest(text, "hex"))
        except ValueError:
            raise Refusal(401, "signature: x-signature 'v1' is not hex") from None
    return stamps[0], tuple(digests)


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, MercadoPagoOptions)
    require_post(request, "Mercado Pago")
    check_allowlist(route, request)
    value = request.header(HEADER)
    if value is None:
        raise Refusal(
            401, "signature: x-signature header missing (QR Code and IPN notifications are unsigned)"
        )
    ts, presented = _presented(value)
    data_id = query_value(request, "data.id")
    candidates = _manifests(data_id, request.header("x-request-id"), ts)
    keys = tuple(secret.encode() for secret in options.secrets)
    if not matches_any_of(presented, candidates, keys, "sha256"):
        raise Refusal(401, "signature: x-signature does not match")
    if route.tolerance is not None:
        check_timestamp(ts, request.now, route.tolerance, True, "x-signature ts")
    require_json(request)
    body = json_object(request.body)
    return one_event(*_kind_and_dedup(body, data_id))


def _kind_and_dedup(body: dict[str, object], query_id: str | None) -> tuple[str, str, dict[str, object]]:
    """The body is not signed: its ``data.id`` must be the signed one (the query's), so a captured
    signature cannot carry another resource's id."""
    data = body.get("data")
    body_id = first_text(data.get("id") if isinstance(data, dict) else None)
    if query_id and body_id and body_id.lower() != query_id.lower():
        raise Refusal(401, "signature: the body's data.id is not the signed ?data.id")
    data_id = first_text(query_id, body_id)
    kind = first_text(body.get("action"), body.get("type")) or "event"
    notification = first_text(body.get("id"))
    if notification is not None:
        return kind, f"notification:{notification}", body
    if data_id is None:
        raise Refusal(400, "body has neither a notification 'id' nor 'data.id'")
    return kind, f"{body.get('type')}:{data_id}:{body.get('action')}", body


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    secret = options_of(route, MercadoPagoOptions).secrets[0]
    data_id, request_id, ts = "123456789", str(uuid.uuid4()), str(int(now))
    body = json.dumps(
        {
            "id": int(now),
            "live_mode": False,
            "type": "payment",
            "action": event or "payment.updated",
            "api_version": "v1",
            "data": {"id": data_id},
        }
    ).encode()
    digest = hmac_digest("sha256", secret.encode(), manifest(data_id, request_id, ts))
    headers = {
        "Content-Type": "application/json",
        "x-request-id": request_id,
        HEADER: f"ts={ts},v1={encode_digest(digest, 'hex')}",
    }
    return SampleRequest(path=f"?data.id={data_id}&type=payment", headers=headers, body=body)


PROVIDER = Provider(
    name="mercadopago",
    modes=("hmac",),
    keys=frozenset({"secrets"}),
    parse_options=parse_options,
    verify=verify,
    sample=sample,
)
