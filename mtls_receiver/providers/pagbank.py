"""PagBank (PagSeguro): ``x-authenticity-token`` = SHA-256 hex of ``{token}-{raw body}``.

A plain hash, not an HMAC, keyed by the account's API token. The sandbox often omits the header:
such a request is refused like any unsigned one (there is no way to tell it from a forgery).
The body is the order or charge as the API returns it and carries no event id, so the dedup key
is each charge's (id, status), or the order's (id, status) without charges.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import ClientIdentity, IncomingRequest, Verdict
from ..signatures import plain_digest_matches
from .base import Provider, RouteContext, SampleRequest
from .common import (
    check_allowlist,
    first_text,
    json_object,
    one_event,
    options_of,
    require_json,
    require_post,
    static_secrets,
)

__all__ = ["HEADER", "PROVIDER", "PagBankOptions", "verify"]

HEADER = "x-authenticity-token"


@dataclass(frozen=True)
class PagBankOptions(ProviderOptions):
    secrets: tuple[str, ...] = field(default=(), repr=False)  # the account API token(s)


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> PagBankOptions:
    return PagBankOptions(secrets=static_secrets(reader, raw, route.key, "header"))


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, PagBankOptions)
    require_post(request, "PagBank")
    check_allowlist(route, request)
    presented = request.header(HEADER)
    if presented is None:
        raise Refusal(401, f"signature: {HEADER} header missing (the sandbox often omits it; refused)")
    if not plain_digest_matches(presented, options.secrets, b"-", request.body):
        raise Refusal(401, f"signature: {HEADER} does not match")
    require_json(request)
    body = json_object(request.body)
    kind, dedup, order = _kind_and_dedup(body)
    return one_event(kind, dedup, body, order_key=order)


def _kind_and_dedup(body: dict[str, Any]) -> tuple[str, str, str]:
    resource = first_text(body.get("id"))
    if resource is None:
        raise Refusal(400, "a PagBank notification has the order's or charge's 'id'")
    charges = body.get("charges")
    if isinstance(charges, list) and charges:
        states = ",".join(
            f"{first_text(c.get('id'))}:{first_text(c.get('status'))}" for c in charges if isinstance(c, dict)
        )
        return "order", f"order:{resource}:{states}", resource
    kind = "charge" if resource.startswith("CHAR_") else "order"
    return kind, f"{kind}:{resource}:{first_text(body.get('status'))}", resource


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    token = options_of(route, PagBankOptions).secrets[0]
    body = json.dumps(
        {
            "id": f"ORDE_TEST{int(now)}",
            "reference_id": "test",
            "charges": [{"id": f"CHAR_TEST{int(now)}", "status": event or "PAID", "amount": {"value": 100}}],
        }
    ).encode()
    digest = hashlib.sha256(token.encode() + b"-" + body).hexdigest()
    return SampleRequest(path="", headers={"Content-Type": "application/json", HEADER: digest}, body=body)


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    return "digest-signature"  # a hash with the token, not an HMAC


PROVIDER = Provider(
    name="pagbank",
    modes=("digest",),
    keys=frozenset({"secrets"}),
    parse_options=parse_options,
    verify=verify,
    verified_by=verified_by,
    sample=sample,
)
