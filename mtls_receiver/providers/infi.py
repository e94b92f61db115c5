"""INFI (International Finance): ``X-Infi-Signature: sha256=<hex>`` over ``timestamp "." body``.

Each retry is re-signed with a new timestamp, but ``X-Infi-Event-Id`` (also ``eventId``
in the body) stays the same, so that is the dedup key; (transactionId, status) otherwise.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..events import IncomingRequest, NewEvent, Verdict
from ..signatures import SignatureScheme, hmac_sha256
from .base import Provider, RouteContext, SampleRequest
from .common import content_digest, options_of, signing_secrets, verified_json

__all__ = ["PROVIDER", "SCHEME", "InfiOptions", "sample", "verify"]

SCHEME = SignatureScheme(
    header="X-Infi-Signature",
    prefix="sha256=",
    encoding="hex",
    signed=("timestamp", "body"),
    separator=".",
    timestamp_header="X-Infi-Timestamp",
    timestamp_required=True,
    tolerance=300,
)


@dataclass(frozen=True)
class InfiOptions(ProviderOptions):
    secrets: tuple[str, ...] = field(default=(), repr=False)  # signing secrets (several: rotation)


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> InfiOptions:
    return InfiOptions(secrets=signing_secrets(reader, raw, route.key))


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    body = verified_json(route, request, "INFI", SCHEME, options_of(route, InfiOptions).secrets)
    event_id = request.header("X-Infi-Event-Id") or body.get("eventId")
    if event_id:
        dedup = f"event:{event_id}"
    elif body.get("transactionId") is not None and body.get("status") is not None:
        dedup = f"tx:{body['transactionId']}:{body['status']}"
    else:
        dedup = f"sha256:{content_digest(request.body)}"
    kind = str(request.header("X-Infi-Event") or body.get("event") or "event")
    order = str(body.get("transactionId") or dedup)  # a transaction's status changes arrive in order
    return Verdict(kind=kind, events=(NewEvent(kind, dedup, body, order_key=order),), body=b"")


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    """A notification as INFI sends one: ``event`` (``transaction.paid`` by default; its second part is
    the status), a fresh event id, signed with the route's first secret over ``timestamp "." body``."""
    event = event or "transaction.paid"
    family, _, status = event.partition(".")
    event_id = f"evt_{int(now * 1000)}_{secrets.token_hex(4)}"
    moment = datetime.fromtimestamp(now, UTC)
    document = {
        "event": event,
        "type": family,
        "eventId": event_id,
        "transactionId": f"tx_sendtest_{secrets.token_hex(6)}",
        "status": status or "paid",
        "amountCents": 1000,
        "endToEndId": f"E00000000{moment:%Y%m%d%H%M}SENDTEST{secrets.token_hex(2)[:3]}",  # Pix's 32 chars
        "createdAt": f"{moment:%Y-%m-%dT%H:%M:%SZ}",
        "description": "mtls-receiver send-test: not a real payment",
    }
    body = json.dumps(document, separators=(",", ":")).encode()
    timestamp = str(int(now))
    digest = hmac_sha256(options_of(route, InfiOptions).secrets[0].encode(), f"{timestamp}.".encode() + body)
    headers = {
        "Content-Type": "application/json",
        "X-Infi-Event": event,
        "X-Infi-Event-Id": event_id,
        "X-Infi-Timestamp": timestamp,
        "X-Infi-Signature": f"sha256={digest.hex()}",
    }
    return SampleRequest(path="", headers=headers, body=body)


PROVIDER = Provider(
    name="infi",
    modes=("hmac",),
    keys=frozenset({"secrets"}),
    parse_options=parse_options,
    verify=verify,
    sample=sample,
)
