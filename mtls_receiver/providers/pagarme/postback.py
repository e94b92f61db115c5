"""Pagar.me v1–v4 postbacks: ``X-Hub-Signature: sha1=<hex>``, HMAC-SHA1 of the raw body.

The key is the account's API key (``ak_live_…``/``ak_test_…``). The algorithm is pinned to SHA-1
(the SDKs take it from the header's prefix; an attacker must not choose it). The body is
``application/x-www-form-urlencoded`` (``transaction[status]=paid&…``): the event is stored as a
JSON object of its fields, names as sent. Dedup: (``id``, ``current_status``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ...config.reader import Reader, Table
from ...config.schema import ProviderOptions, RouteConfig
from ...errors import Refusal
from ...events import ClientIdentity, IncomingRequest, Verdict
from ...signatures import SignatureScheme, sign_request
from ..base import RouteContext, SampleRequest, signature_verified
from ..common import first_text, form_object, one_event, options_of, signing_secrets, verified_request

__all__ = ["KEYS", "SCHEME", "PostbackOptions", "parse_options", "sample", "verified_by", "verify"]

KEYS = frozenset({"secrets"})
SCHEME = SignatureScheme(header="X-Hub-Signature", prefix="sha1=", algorithm="sha1", signed=("body",))


@dataclass(frozen=True)
class PostbackOptions(ProviderOptions):
    secrets: tuple[str, ...] = field(default=(), repr=False)  # the account API key(s)


def parse_options(reader: Reader, raw: Table, context: RouteContext) -> PostbackOptions:
    return PostbackOptions(secrets=signing_secrets(reader, raw, context.key))


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, PostbackOptions)
    verified_request(route, request, "Pagar.me", SCHEME, options.secrets)
    body = form_object(request.body)
    return one_event(*_kind_and_dedup(body, request))


def _kind_and_dedup(body: dict[str, Any], request: IncomingRequest) -> tuple[str, str, dict[str, Any], str]:
    resource, status = first_text(body.get("id")), first_text(body.get("current_status"))
    if resource is None:
        raise Refusal(400, "a Pagar.me postback has an 'id' field")
    kind = first_text(request.header("X-PagarMe-Event"), body.get("event")) or "postback"
    return kind, f"{resource}:{status}", body, resource


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    return signature_verified(route, client)


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    key = options_of(route, PostbackOptions).secrets[0]
    fields = {
        "id": str(int(now)),
        "event": event or "transaction_status_changed",
        "old_status": "processing",
        "desired_status": "paid",
        "current_status": "paid",
        "object": "transaction",
        "transaction[status]": "paid",
    }
    body = urlencode(fields).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-PagarMe-Event": fields["event"],
        "User-Agent": "PagarMe-Hookshot/1.0",
    }
    path, signed = sign_request(SCHEME, key.encode(), route.path, headers, body, now)
    return SampleRequest(path=path[len(route.path) :], headers=signed, body=body)
