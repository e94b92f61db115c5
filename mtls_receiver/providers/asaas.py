"""Asaas: the static ``asaas-access-token`` you set on the webhook (nothing is signed).

The token proves the sender knows it; it does not cover the body and a captured request can be
replayed, so the route defaults to Asaas's published production addresses. The sandbox sends
from others: a sandbox route sets ``allow_ips`` (``[]`` for any address). Dedup: the top-level
``id`` ("repeats when it is the same event").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..addresses import Network, parse_networks
from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import ClientIdentity, IncomingRequest, Verdict
from .base import Provider, RouteContext, SampleRequest
from .common import (
    STATIC_VERIFIED_BY,
    check_allowlist,
    first_text,
    json_object,
    one_event,
    options_of,
    require_json,
    require_post,
    require_token,
    static_secrets,
)

__all__ = ["HEADER", "PRODUCTION_IPS", "PROVIDER", "AsaasOptions", "verify"]

HEADER = "asaas-access-token"
#: docs.asaas.com "IPs oficiais do Asaas" (2024-10-23: 54.207.175.46 and 54.94.35.137 retired)
PRODUCTION_IPS = parse_networks(["52.67.12.206", "18.230.8.159", "54.94.136.112", "54.94.183.101"])


@dataclass(frozen=True)
class AsaasOptions(ProviderOptions):
    secrets: tuple[str, ...] = field(default=(), repr=False)  # authTokens (several: rotation)

    def sender_ips(self, mode: str) -> tuple[Network, ...]:
        return PRODUCTION_IPS


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> AsaasOptions:
    return AsaasOptions(secrets=static_secrets(reader, raw, route.key, "header"))


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, AsaasOptions)
    require_post(request, "Asaas")
    check_allowlist(route, request)
    require_token(request.header(HEADER), options.secrets, f"{HEADER} header")
    require_json(request)
    body = json_object(request.body)
    event_id, kind = first_text(body.get("id")), first_text(body.get("event"))
    if event_id is None or kind is None:
        raise Refusal(400, "an Asaas event has an 'id' and an 'event'")
    payment = body.get("payment")
    order = first_text(payment.get("id") if isinstance(payment, dict) else None) or event_id
    return one_event(kind, f"event:{event_id}", body, order_key=order)


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    return STATIC_VERIFIED_BY["header"]


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    body = json.dumps(
        {
            "id": f"evt_test_{int(now)}",
            "event": event or "PAYMENT_RECEIVED",
            "dateCreated": "2026-01-01 12:00:00",
            "payment": {"object": "payment", "id": "pay_test", "status": "RECEIVED"},
        }
    ).encode()
    secret = options_of(route, AsaasOptions).secrets[0]
    return SampleRequest(path="", headers={"Content-Type": "application/json", HEADER: secret}, body=body)


PROVIDER = Provider(
    name="asaas",
    modes=("token",),
    keys=frozenset({"secrets"}),
    parse_options=parse_options,
    verify=verify,
    verified_by=verified_by,
    sample=sample,
)
